"""The library functions behind ``jaxasr-interp patch``, ``logit-lens`` and ``encoder-lens``
(:mod:`jaxasr_interp.patching.on_audio`, :mod:`jaxasr_interp.lenses.files`), on hand-built
values and on tiny.en with the bundled clips: a zero-alpha sweep changes nothing, pooling is
a plain mean, and the file lens equals the lens of each file run alone."""

import numpy as np
import pytest

import jaxasr_interp as jai
from jaxasr_interp.lenses import (EncoderLens, LogitLens, audio_mel, encoder_lens_record, encoder_lens_rows,
                                  logit_lens, logit_lens_files, logit_lens_record, logit_lens_rows,
                                  saturation_summary, teacher_ids)
from jaxasr_interp.patching import (alpha_curves, decode_audio, largest_drop, pooled, sweep_audio,
                                    sweep_statistics, transcript_positions)
from jaxasr_interp.whisper.tokenizer import teacher_tokens

JFK = str(jai.sample_path("jfk.wav"))
SHORT = [str(jai.sample_path(f"sense_and_sensibility_01_austen_64kb-{n}.wav")) for n in ("0880", "0930")]


@pytest.fixture(scope="module")
def model():
    return jai.load("tiny.en")


def test_transcript_positions_run_from_the_prompt_to_end_of_text():
    # prompt of 3, transcript of 2, end-of-text: positions 2, 3, 4 predict tokens 3, 4, 5
    np.testing.assert_array_equal(transcript_positions(8, 3, 6), [0, 0, 1, 1, 1, 0, 0])


def test_sweep_statistics_hand_built():
    clean = {"logprob": np.array([-1.0, -2.0, -3.0]), "logit": np.array([5.0, 6.0, 7.0]), "top": np.array([1, 2, 3])}
    patched = {"logprob": np.array([[[[-9.0, -3.0, -5.0]]]]), "logit": np.array([[[[9.0, 4.0, 3.0]]]]),
               "top": np.array([[[[1, 9, 9]]]])}
    stats = sweep_statistics(patched, clean, np.array([False, True, True]))
    assert stats["logprob"].shape == (1, 1, 1)
    assert stats["logprob"][0, 0, 0] == -1.5 and stats["logit"][0, 0, 0] == -3.0
    assert stats["top_changed"][0, 0, 0] == 1.0


def test_pooled_is_the_mean_over_files():
    rng = np.random.default_rng(0)
    per_file = [rng.normal(size=(4, 6, 2)).astype(np.float32) for _ in range(3)]
    want = np.mean(np.stack([v.astype(np.float64) for v in per_file]), axis=0)
    np.testing.assert_array_equal(pooled(per_file), want)
    np.testing.assert_array_equal(pooled([v.tolist() for v in per_file]), want)  # JSON records


def test_alpha_curves_and_largest_drop_hand_built():
    stat = np.zeros((2, 3, 2))
    stat[1, 2] = [-0.5, -2.0]
    stat[1, 0] = [-1.0, -1.0]
    curves = alpha_curves(stat, "decoder.cross_head")  # strongest head per layer and alpha
    assert list(curves) == ["layer 0", "layer 1"]
    np.testing.assert_array_equal(curves["layer 1"], [-1.0, -2.0])
    np.testing.assert_array_equal(alpha_curves(stat[:, :1], "decoder.mlp")["layer 1"], [-1.0, -1.0])
    assert largest_drop(stat) == ((1, 2, 1), -2.0)
    assert largest_drop(stat.tolist()) == ((1, 2, 1), -2.0)


def test_zero_alpha_sweep_and_decoding_change_nothing(model):
    tok = model.tokenizer
    ids, tokens, ref, stats = sweep_audio(model, JFK, "decoder.cross_attn", (0.0,), width=64)
    # tiny.en's greedy transcript (no comma after "Americans", unlike the reference text)
    assert tok.decode(ids).strip() == ("And so my fellow Americans ask not what your country can do for you, "
                                       "ask what you can do for your country.")
    np.testing.assert_array_equal(tokens, teacher_tokens(tok.prompt(), ids, tok.eot, 64))
    assert ref.shape[0] == model.dims.n_text_layer  # the white-noise reference run's site
    assert set(stats) == {"logprob", "logit", "top_changed"}
    for value in stats.values():
        assert value.shape == (model.dims.n_text_layer, 1, 1)
        np.testing.assert_array_equal(value, 0.0)
    rows = decode_audio(model, JFK, "decoder.cross_attn", tokens, ref, 0.0)
    assert [(r["layer"], r["head"], r["alpha"]) for r in rows] == [(i, None, 0.0) for i in range(4)]
    assert all(r["wer"] == 0.0 for r in rows), rows


def test_teacher_ids_of_a_given_text(model):
    assert teacher_ids(model, [JFK], text=" ask not ") == [model.tokenizer.encode(" ask not")]
    with pytest.raises(ValueError, match="exactly one"):
        teacher_ids(model, [JFK, JFK], text="ask not")


def test_file_lens_equals_each_file_run_alone(model):
    paths = SHORT + [JFK]  # batches of 2: the last one is padded with a copy of the JFK clip
    ids = teacher_ids(model, paths, batch_size=2)
    lenses = list(logit_lens_files(model, paths, ids, batch_size=2, k=3))
    prompt, width = model.tokenizer.prompt(), max(len(model.tokenizer.prompt()) + len(i) for i in ids)
    assert len(lenses) == 3
    for path, i, lens in zip(paths, ids, lenses):
        n = len(prompt) + len(i)
        mel = jai.log_mel(jai.load_audio(path), n_mels=model.dims.n_mels)
        alone = logit_lens(model, mel, teacher_tokens(prompt, i, model.tokenizer.eot, width), k=3)
        assert lens.tokens.tolist() == prompt + i and lens.top_ids.shape[2:] == (n, 3)
        np.testing.assert_array_equal(lens.saturation, alone.saturation[:n])
        np.testing.assert_array_equal(lens.final_ids, alone.final_ids[:n])
        np.testing.assert_allclose(lens.kl, alone.kl[:, :, :n], rtol=1e-5, atol=1e-5)  # batched vs alone
    values, mean = saturation_summary([x.saturation for x in lenses])
    assert len(values) == sum(len(x.tokens) for x in lenses) and mean == np.mean(values)


def test_saturation_summary_and_utterance_hand_built():
    values, mean = saturation_summary([np.array([0, 4]), np.array([1])])
    assert values.tolist() == [0, 4, 1] and mean == 5 / 3
    b, s, layers, t, k = 2, 1, 2, 4, 2
    arr = lambda *shape: np.arange(np.prod(shape)).reshape(shape)
    lens = LogitLens(("resid_post",), arr(b, t), arr(b, t), arr(b, s, layers, t, k), arr(b, s, layers, t, k) / 100,
                     arr(b, s, layers, t) / 100, arr(b, s, layers, t), arr(b, s, layers, t), arr(b, t))
    one = lens.utterance(1, 3)
    assert one.tokens.tolist() == [4, 5, 6] and one.top_ids.shape == (1, 2, 3, 2)
    np.testing.assert_array_equal(one.kl, lens.kl[1][:, :, :3])
    with pytest.raises(ValueError, match="batched"):
        one.utterance(0)


def test_lens_records_and_rows(model):
    tok = model.tokenizer
    ids = [tok.eot, tok.encode(" ask")[0]]
    lens = LogitLens(("resid_post",), np.array(ids), np.array(ids[::-1]), np.array([[[[ids[1]], [ids[0]]]]]),
                     np.array([[[[0.25], [0.5]]]]), np.array([[[0.1234567, 0.5]]]), np.array([[[2, 0]]]),
                     np.array([[[1.0, 0.0]]]), np.array([1, 0]))
    record = logit_lens_record(lens, tok, "a.wav")
    assert record["token_text"] == ["<|endoftext|>", " ask"] and record["final_text"] == [" ask", "<|endoftext|>"]
    assert record["sites"]["resid_post"]["final_prob"] == [[0.123457, 0.5]]
    rows = logit_lens_rows(record)
    assert len(rows) == 2 and rows[1]["top1"] == "<|endoftext|>" and rows[0]["final_rank"] == 2
    x = EncoderLens(["", "hi"], [[], [1]], "hi", "hi", np.array([1.0, 0.0]), np.array([1.0, 0.0]),
                    np.array([1, 0]), np.array([1, 1]), np.array([2, 0]), np.array([2, 2]), np.array([1, 1]),
                    np.array([0.0, 1.0]), np.array([False, False]))
    record = encoder_lens_record(x, "b.wav")
    assert record["wer"] == [1.0, 0.0] and record["transcripts"] == ["", "hi"] and record["ln_post"] is True
    rows = encoder_lens_rows([record, record])
    assert [(r["layer"], r["transcript"], r["wer"]) for r in rows[:2]] == [(0, "", 1.0), (1, "hi", 0.0)]
    assert len(rows) == 4


def test_audio_mel_of_the_jfk_clip():
    mel, seconds = audio_mel(JFK, 80)
    assert mel.shape == (80, 3000) and seconds == 11.0
