"""Dataset builders: deterministic for a seed, balanced, labelled with their source; the format
reads back and rejects broken directories with clear errors."""

import json
import types

import numpy as np
import pytest
import soundfile as sf

from jaxasr_interp.data import build_gender, build_hallucination, build_noise, build_speech, read_dataset
from jaxasr_interp.data import synth
from jaxasr_interp.patching.reference import white_noise
from jaxasr_interp.whisper.text_metrics import normalize


def _snapshot(root):
    return (root / "labels.csv").read_text(), sorted(
        (p.name, p.read_bytes()) for p in (root / "audio").iterdir())


def test_builders_are_deterministic_for_a_seed_and_report_counts(tmp_path):
    counts = build_gender(tmp_path / "a", 3, seed=4)
    build_gender(tmp_path / "b", 3, seed=4)
    build_gender(tmp_path / "c", 3, seed=5)
    assert counts == {"gender": {"male": 3, "female": 3}}
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")
    assert _snapshot(tmp_path / "a") != _snapshot(tmp_path / "c")
    data = read_dataset(tmp_path / "a")
    labels, names = data.encoded("gender")
    assert names == ["male", "female"] and labels.tolist() == [0, 1] * 3
    assert "espeak-ng" in data.meta["label_source"] and data.meta["counts"] == counts
    for row, path in zip(data.rows, data.paths):
        assert row["source"].startswith("espeak-ng") and row["transcript"].endswith(".")
        variant = row["source"].split("+")[1].split(",")[0]
        assert variant[0] == row["gender"][0]  # m* voices are male, f* female
        audio, rate = sf.read(path)
        assert rate == 16000 and 0.5 < audio.size / rate < 10


def test_noise_mixing_hits_the_requested_snr_and_classes_never_share_an_utterance(tmp_path):
    rng = np.random.default_rng(0)
    speech = np.sin(np.arange(16000) / 7).astype(np.float32) * 0.3
    noise = white_noise(1.0, rng=rng)
    mixed = synth.mix_at_snr(speech, noise, 5.0)
    residual = mixed - speech
    snr = 10 * np.log10(np.mean(speech ** 2) / np.mean(residual ** 2))
    assert abs(snr - 5.0) < 0.01
    build_noise(tmp_path / "n", 3, snrs=(0.0, 10.0), seed=1)
    data = read_dataset(tmp_path / "n")
    noisy = [r for r in data.rows if r["noisy"] == "noisy"]
    assert len(noisy) == 3 and all(float(r["snr_db"]) in (0.0, 10.0) for r in noisy)
    assert len({r["transcript"] for r in data.rows}) == 6
    for r in data.rows:  # the extra voice labels agree with the recorded source
        assert f"+{r['gender'][0]}" in r["source"] and (int(r["source"].split("speed ")[1].split(",")[0]) >= 165) == (r["rate"] == "fast")


def test_speech_vs_non_speech_covers_noise_tones_and_silence(tmp_path):
    counts = build_speech(tmp_path / "s", 3, seed=0)
    assert counts == {"speech": {"speech": 3, "non-speech": 3}}
    data = read_dataset(tmp_path / "s")
    kinds = sorted(r["kind"] for r in data.rows if r["speech"] == "non-speech")
    assert kinds == ["noise", "silence", "tones"]
    silent = next(p for r, p in zip(data.rows, data.paths) if r["kind"] == "silence")
    assert np.abs(sf.read(silent)[0]).max() < 1e-3


def test_hallucination_split_takes_zero_wer_against_the_k_worst(tmp_path, monkeypatch):
    import jaxasr_interp.whisper.api as api

    def fake_transcribe(model, audios, **kw):  # right on even items, wrong on odd ones
        texts = synth.sentences(np.random.default_rng(3), len(audios))
        return [t if i % 2 == 0 else " ".join(t.split()[: i % 5]) for i, t in enumerate(texts)]

    monkeypatch.setattr(api, "transcribe", fake_transcribe)
    counts = build_hallucination(tmp_path / "h", types.SimpleNamespace(source="fake"), pool=10, k=3, seed=3)
    assert counts == {"outcome": {"correct": 3, "hallucination": 3}}
    data = read_dataset(tmp_path / "h")
    wers = {r["outcome"]: [] for r in data.rows}
    for r in data.rows:
        wers[r["outcome"]].append(float(r["wer"]))
    assert max(wers["correct"]) == 0.0 and min(wers["hallucination"]) >= 0.5
    assert "WER of fake" in data.meta["label_source"]


def test_bad_datasets_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset.json is missing"):
        read_dataset(tmp_path)
    build_speech(tmp_path / "s", 2, seed=0)
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        build_speech(tmp_path / "s", 2, seed=0)
    with pytest.raises(KeyError, match="label columns: speech"):
        read_dataset(tmp_path / "s").encoded("gender")
    meta = json.loads((tmp_path / "s" / "dataset.json").read_text())
    meta["classes"]["speech"] = ["speech"]
    (tmp_path / "s" / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown classes"):
        read_dataset(tmp_path / "s")
    with pytest.raises(ValueError, match="at least 2 items"):
        build_speech(tmp_path / "t", 1)


def test_plain_normalizer_for_wer():
    assert normalize("Hello,  World! It's", "plain") == "hello world it's"


def test_the_contextual_bias_pool_extends_to_400_sentences_keeping_the_first_100():
    from jaxasr_interp.data.minimal_pairs import ALL_PAIRS, PAIRS, generate
    stimuli = generate(pairs=ALL_PAIRS)
    assert len(stimuli) == 400 == len({s.sentence for s in stimuli}) and len(ALL_PAIRS) == 100
    assert stimuli[:100] == generate() and len(generate(pairs=PAIRS)) == 100
    assert all(len(t) == 4 for t in ALL_PAIRS.values())
