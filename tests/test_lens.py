"""Logit lens and encoder lens.

- Logit lens on a random prime-sized config against a PyTorch lens built on transformers'
  eager Whisper (hooked residuals -> its decoder LayerNorm -> its tied lm_head), every site
  and layer; the last layer equals the model's own logits; batched equals single runs; the
  saturation layer on a hand-built example.
- Encoder lens on tiny.en and a real LibriVox clip: the last layer equals normal
  transcription; every layer's greedy tokens equal a PyTorch implementation (hook each
  transformers encoder block output, apply its ln_post, ``generate`` greedily).
- Text metrics on known values.
"""

import dataclasses

import jax
import jax.numpy as jnp
import jiwer
import numpy as np
import pytest
import torch
from transformers.modeling_outputs import BaseModelOutput

import jaxasr_interp as jai
from jaxasr_interp.whisper import text_metrics as tm
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.lenses.encoder import encoder_lens, pooled_rates
from jaxasr_interp.lenses.logit import LENS_SITES, logit_lens, saturation_layer
from torch_ref import params_of, random_torch_model, reference_run, torch_model_from_params

DIMS = Dims(n_mels=80, n_audio_ctx=23, n_audio_state=70, n_audio_head=5, n_audio_layer=3,
            n_vocab=97, n_text_ctx=19, n_text_state=70, n_text_head=5, n_text_layer=3)
CLIP = "sense_and_sensibility_01_austen_64kb-0880.wav"


def test_saturation_layer_hand_built():
    final = np.array([7, 7, 7, 7, 7])
    top1 = np.array([[7, 1, 7, 7, 2],   # layer 0
                     [7, 7, 1, 7, 2],   # layer 1
                     [7, 7, 7, 1, 2],   # layer 2
                     [7, 7, 7, 7, 2]])  # layer 3 (last)
    # position 0 agrees everywhere; 1 from layer 1; 2 from layer 2; 3 from layer 3 (it agreed at
    # layers 0-1 but changed its mind at 2); 4 never agrees -> L
    want = [0, 1, 2, 3, 4]
    assert np.asarray(saturation_layer(top1, final)).tolist() == want
    batched = saturation_layer(np.stack([top1, top1[:, ::-1]]), np.stack([final, final]))
    assert np.asarray(batched).tolist() == [want, want[::-1]]


@pytest.fixture(scope="module")
def random_case():
    torch_model = random_torch_model(DIMS, seed=3)
    with torch.no_grad():  # a larger (tied) embedding: peaked next-token distributions
        torch_model.model.decoder.embed_tokens.weight.mul_(12.0)
    assert torch_model.proj_out.weight is torch_model.model.decoder.embed_tokens.weight
    params = jax.tree_util.tree_map(jnp.asarray, params_of(torch_model, DIMS))
    rng = np.random.default_rng(0)
    mels = rng.standard_normal((2, DIMS.n_mels, DIMS.n_samples_frames)).astype(np.float32)
    tokens = rng.integers(0, DIMS.n_vocab, (2, 11)).astype(np.int32)
    model = jai.Model(params, DIMS, tokenizer=None)
    return model, torch_model, mels, tokens


def torch_lens(torch_model, mel, tokens):
    """{site: log-probs [L, T, V]} and the final log-probs [T, V], computed in PyTorch."""
    ref = reference_run(torch_model, mel, tokens)
    dec = torch_model.model.decoder
    out = {}
    with torch.no_grad():
        for site in LENS_SITES:
            h = dec.layer_norm(torch.from_numpy(ref[f"decoder.{site}"]))
            out[site] = torch.log_softmax(torch_model.proj_out(h), -1).numpy()
    return out, torch.log_softmax(torch.from_numpy(ref["logits"]), -1).numpy()


def test_logit_lens_matches_pytorch_lens(random_case):
    model, torch_model, mels, tokens = random_case
    lens = logit_lens(model, mels[0], tokens[0])
    ref, final = torch_lens(torch_model, mels[0], tokens[0])
    final_ids = final.argmax(-1)
    assert lens.final_ids.tolist() == final_ids.tolist()
    for s, site in enumerate(lens.sites):
        logp = ref[site]
        p_final = np.take_along_axis(logp, np.broadcast_to(final_ids[None, :, None], logp.shape[:2] + (1,)), -1)[..., 0]
        kl = (np.exp(final) * (final - logp)).sum(-1)
        rank = (logp > p_final[..., None]).sum(-1)
        np.testing.assert_allclose(lens.final_prob[s], np.exp(p_final), atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(lens.kl[s], kl, atol=1e-4, rtol=1e-4)
        np.testing.assert_array_equal(lens.final_rank[s], rank)
        np.testing.assert_allclose(lens.top_probs[s], np.sort(np.exp(logp), -1)[..., ::-1][..., :5], atol=1e-5)
        assert kl.max() > 0.5  # the random model's layers disagree: not a degenerate comparison
    top1 = ref["resid_post"].argmax(-1)
    assert lens.saturation.tolist() == np.asarray(saturation_layer(top1, final_ids)).tolist()
    assert len(set(lens.saturation.tolist())) > 1


def test_last_layer_logit_lens_equals_model_logits(random_case):
    model, _, mels, tokens = random_case
    lens = logit_lens(model, mels[0], tokens[0])
    logits, _ = jai.forward(model.params, jnp.asarray(mels[0]), jnp.asarray(tokens[0]), dims=DIMS)
    probs = np.asarray(jax.nn.softmax(logits, -1))
    last = lens.site("resid_post")
    np.testing.assert_allclose(last["top_probs"][-1], -np.sort(-probs, -1)[:, :5], atol=1e-6)
    np.testing.assert_array_equal(last["top_ids"][-1, :, 0], probs.argmax(-1))
    np.testing.assert_allclose(last["kl"][-1], 0.0, atol=1e-6)
    assert (last["final_rank"][-1] == 0).all() and (lens.saturation <= DIMS.n_text_layer - 1).all()


def test_batched_logit_lens_equals_single_runs(random_case):
    model, _, mels, tokens = random_case
    batch = logit_lens(model, mels, tokens)
    assert batch.top_ids.shape == (2, 3, DIMS.n_text_layer, tokens.shape[1], 5)
    for i in range(2):
        one = logit_lens(model, mels[i], tokens[i])
        np.testing.assert_array_equal(batch.saturation[i], one.saturation)
        np.testing.assert_allclose(batch.kl[i], one.kl, atol=1e-5)
    with pytest.raises(ValueError, match="tokens"):
        logit_lens(model, mels, tokens[0])
    with pytest.raises(ValueError, match="resid_post"):
        logit_lens(model, mels[0], tokens[0], sites=("resid_mid",))


@pytest.fixture(scope="module")
def tiny():
    model = jai.load("tiny.en")
    torch_model = torch_model_from_params(jax.tree_util.tree_map(np.asarray, model.params), model.dims)
    mel = jai.log_mel(jai.load_audio(jai.sample_path(CLIP)), n_mels=model.dims.n_mels)
    return model, torch_model, mel


def torch_encoder_lens_ids(model, torch_model, mel, max_new_tokens):
    """Per-layer greedy ids from transformers: hooked block outputs -> ln_post -> generate."""
    enc = torch_model.model.encoder
    outputs = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outputs.append(o[0] if isinstance(o, tuple) else o))
             for layer in enc.layers]
    try:
        with torch.no_grad():
            enc(torch.from_numpy(np.asarray(mel))[None])
    finally:
        for h in hooks:
            h.remove()
    tok = model.tokenizer
    with torch.no_grad():
        features = enc.layer_norm(torch.cat(outputs))  # [L, S, D]: one row per layer
        ids = torch_model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=features),
            decoder_input_ids=torch.tensor([tok.prompt()] * len(outputs)), max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=1, suppress_tokens=list(tok.suppress_ids()),
            begin_suppress_tokens=list(tok.blank_ids()))
    rows = []
    for row in ids.tolist():
        row = row[len(tok.prompt()):] if row[:len(tok.prompt())] == tok.prompt() else row
        rows.append(row[: row.index(tok.eot)] if tok.eot in row else row)
    return rows


def test_encoder_lens_per_layer_matches_pytorch(tiny):
    # Whisper's suppression keeps the early layers from answering with an immediate end-of-text
    # (what tiny.en's layers 0-2 do under plain argmax), so every layer's tokens are compared.
    model, torch_model, mel = tiny
    reference = jai.sample_transcripts()[CLIP]
    ours = encoder_lens(model, mel, reference, suppress=True, max_new_tokens=32)
    want = torch_encoder_lens_ids(model, torch_model, mel, 32)
    assert len(ours.transcripts) == model.dims.n_audio_layer
    assert ours.token_ids == want
    assert all(ids for ids in want)  # every layer said something
    for layer, ids in enumerate(want):
        hyp = tm.normalize(model.tokenizer.decode(ids))
        expected = jiwer.wer(tm.normalize(reference), hyp) if hyp else 1.0
        assert ours.wer[layer] == pytest.approx(expected, abs=1e-12)
    assert ours.wer[-1] < 0.5 < ours.wer[0]  # meaning emerges with depth


def test_encoder_lens_last_layer_equals_transcription(tiny):
    model, _, mel = tiny
    lens = encoder_lens(model, [mel], max_new_tokens=32)[0]
    # transcribe_ids's default length: the program other test files compile already
    expected = jai.transcribe_ids(model, [jai.sample_path(CLIP)], batch_size=1)[0]
    assert len(expected) < 32 and lens.token_ids[-1] == expected and lens.final == model.tokenizer.decode(expected)
    assert lens.wer[-1] == 0.0 and lens.reference == lens.final  # no reference: scored against itself
    # pooling two utterances of different lengths is summed errors / summed words, which is not
    # the mean of their rates
    other = dataclasses.replace(lens, word_errors=lens.word_errors * 0 + 1, ref_words=lens.ref_words * 0 + 40,
                                char_errors=lens.char_errors * 0 + 3, ref_chars=lens.ref_chars * 0 + 200)
    wer, cer = pooled_rates([lens, other])
    np.testing.assert_allclose(wer, (lens.word_errors + 1) / (lens.ref_words + 40), rtol=1e-12)
    np.testing.assert_allclose(cer, (lens.char_errors + 3) / (lens.ref_chars + 200), rtol=1e-12)
    assert lens.word_errors[0] > 0 and np.abs(wer[0] - (lens.wer[0] + 1 / 40) / 2) > 1e-3


def test_text_metrics_known_values():
    assert tm.max_repeat("a b a b a b c".split()) == 3
    assert tm.max_repeat("x a b c a b c a b c a b c".split()) == 4
    assert tm.max_repeat("the cat sat".split()) == 1 and tm.max_repeat([]) == 0
    assert tm.word_errors("he was not an ill disposed young man", "he was not an old sposed young man") == (2, 8)
    assert tm.word_errors("a b", "") == (2, 2) and tm.word_errors("", "a") == (1, 0)
    assert tm.char_errors("abc", "abd") == (1, 3)
    assert tm.rate(1, 0) == float("inf") and tm.rate(0, 0) == 0.0
    assert tm.compression_ratio("hello " * 50) > 2.4 > tm.compression_ratio("he was not an ill disposed young man")
    assert tm.normalize("Mr. Dashwood,  COLD-hearted!") == "mister dashwood cold hearted"


def test_plots_write_pngs(random_case, tmp_path):
    from jaxasr_interp.whisper.api import default_tokenizer_file
    from jaxasr_interp.lenses.encoder import EncoderLens
    from jaxasr_interp.plots.lens import figure_with_mel, plot_encoder_lens, plot_logit_lens, plot_saturation_histogram
    model, _, mels, tokens = random_case
    tok = jai.WhisperTokenizer.from_file(default_tokenizer_file(jai.preset("tiny.en")), multilingual=False)
    lens = logit_lens(model, mels, tokens)
    plot_logit_lens(lens, tok, index=1, path=tmp_path / "ll.png")
    plot_saturation_histogram([lens.saturation, lens.saturation[:1]], DIMS.n_text_layer,
                              labels=["a", "b"], path=tmp_path / "sat.png")
    n = np.array([1, 0])
    fake = EncoderLens(["", "he was"], [[], [1]], "he was", "he was", np.array([1.0, 0.0]),
                       np.array([1.0, 0.0]), 2 - 2 * n[::-1], n + 1, n, n, n, n * 0.0, n == 2)
    plot_encoder_lens([fake, fake], path=tmp_path / "el.png", mel=mels[0], seconds=0.3)
    fig, ax_mel, panels = figure_with_mel(mels[0], n_panels=2)
    assert len(panels) == 2 and panels[0].get_shared_x_axes().joined(ax_mel, panels[0])
    for name in ("ll.png", "sat.png", "el.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="index"):
        plot_logit_lens(lens, tok)


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    from jaxasr_interp.cli.main import main
    audio = str(jai.sample_path(CLIP))
    assert main(["encoder-lens", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "refs.txt").write_text("one\ntwo\n")
    assert main(["encoder-lens", audio, "--ref-text", str(tmp_path / "refs.txt"), "--out", str(tmp_path)]) == 2
    assert main(["logit-lens", audio, audio, "--text", "hi", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err), err
