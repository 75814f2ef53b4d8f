"""Speech engines, cross-engine datasets, real recordings and held-out-engine splits: every
engine speaks (non-silent, 16 kHz, a plausible length, the same samples twice), Whisper tiny.en
understands flite, festival and piper, the builders' labels are the voice cards', and a
held-out split tests every item exactly once."""

import numpy as np
import pytest
import soundfile as sf

from jaxasr_interp.data import build_accent_engines, build_gender_engines, build_speech, read_dataset
from jaxasr_interp.data import engines as E
from jaxasr_interp.data import real as R
from jaxasr_interp.data.builders import ACCENTS
from jaxasr_interp.data.splits import cross_engine_splits, group_splits
from jaxasr_interp.whisper.text_metrics import normalize, rate, word_errors

TEXT = "The old man carried the heavy box before dinner."
NON_ESPEAK = [v for v in E.VOICES if v.engine != "espeak-ng"]


def test_the_registry_declares_every_voice_with_known_labels_and_every_engine_is_installed():
    assert [e for e in E.ENGINES if not E.available(e)] == []  # scripts/test.sh installs them all
    assert {v.engine for v in E.installed_voices()} == set(E.ENGINES)
    for v in E.VOICES:
        assert v.gender in ("male", "female") and v.accent in ACCENTS and v.speaker
    assert {v.gender for v in E.REGISTRY["flite"]} == {v.gender for v in E.REGISTRY["festival"]} == {"male", "female"}
    assert [v.voice for v in E.VOICES if v.accent == "scottish" and v.engine == "flite"] == ["awb"]
    with pytest.raises(OSError, match="install the Debian packages festival festvox"):
        E.require("festival", "no_such_voice")
    with pytest.raises(KeyError, match="engines: espeak-ng, flite, festival, piper"):
        E.available("sapi")


@pytest.mark.parametrize("voice", NON_ESPEAK + E.REGISTRY["espeak-ng"][:1], ids=lambda v: f"{v.engine}-{v.voice}")
def test_each_voice_speaks_deterministically_at_16k(voice):
    audio = E.speak(voice, TEXT, stretch=1.1)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.5 < audio.size / 16000 < 6.0  # nine words
    assert np.sqrt(np.mean(audio ** 2)) > 0.01
    np.testing.assert_array_equal(audio, E.speak(voice, TEXT, stretch=1.1))
    slower = E.speak(voice, TEXT, stretch=1.3)
    assert slower.size > 1.1 * audio.size


def test_whisper_transcribes_flite_festival_piper_and_the_real_raw_clips():
    import jaxasr_interp as jai
    voices = [E.REGISTRY["flite"][2], E.REGISTRY["festival"][1], E.REGISTRY["piper"][0]]  # slt, ked, joe
    raw = [c for c in R.clips() if c.path.suffix == ".raw"]
    audio = [E.speak(v, TEXT) for v in voices] + [R.load(c) for c in raw]
    refs = [TEXT] * len(voices) + [c.transcript for c in raw]
    hyps = jai.transcribe(jai.load("tiny.en"), audio, max_new_tokens=32)
    wers = [rate(*word_errors(normalize(r), normalize(h))) for r, h in zip(refs, hyps)]
    assert len(raw) == 2 and max(wers) <= 0.25, list(zip(refs, hyps, wers))


def test_gender_across_engines_is_deterministic_balanced_and_labelled_by_the_voice_card(tmp_path):
    counts = build_gender_engines(tmp_path / "a", 6, seed=2, real=True)
    build_gender_engines(tmp_path / "b", 6, seed=2, real=True)
    snap = [(p.read_bytes(), (tmp_path / "b" / p.relative_to(tmp_path / "a")).read_bytes())
            for p in sorted((tmp_path / "a").rglob("*.*"))]
    assert all(x == y for x, y in snap) and len(snap) == 15
    # piper (male only) joins only when named; each gender cycles the engines that have it
    assert counts == {"gender": {"male": 7, "female": 6}, "engine": {"espeak-ng": 4, "flite": 4, "festival": 4, "real": 1}}
    cards = {(v.engine, v.voice): v for v in E.VOICES}
    data = read_dataset(tmp_path / "a")
    for row, path in zip(data.rows, data.paths):
        if row["engine"] == "real":
            assert (row["speaker"], row["gender"], row["accent"]) == ("jfk", "male", "us")
            continue
        card = cards[(row["engine"], row["voice"])]
        assert (row["gender"], row["accent"], row["speaker"]) == (card.gender, card.accent, card.speaker)
        assert row["source"].startswith(f"{card.engine} ") and f"voice {card.voice}," in row["source"]
        assert sf.info(path).samplerate == 16000
    with pytest.raises(ValueError, match="no installed voice of gender female"):
        build_gender_engines(tmp_path / "c", 2, engines=["piper"])


def test_accent_across_engines_and_held_out_engine_splits(tmp_path):
    counts = build_accent_engines(tmp_path / "a", 4, engines=["espeak-ng", "flite", "piper"], accents=["us", "scottish"])
    assert counts["accent"] == {"us": 4, "scottish": 4}
    assert counts["engine"] == {"espeak-ng": 4, "flite": 3, "piper": 1}  # us: espeak, flite, piper in turn
    data = read_dataset(tmp_path / "a")
    engines = [r["engine"] for r in data.rows]
    labels, _ = data.encoded("accent")
    folds = list(group_splits(engines))
    assert [f[0] for f in folds] == ["espeak-ng", "flite", "piper"]
    tests = np.concatenate([te for _, _, te in folds])
    assert sorted(tests.tolist()) == list(range(len(engines)))  # every item tested exactly once
    for name, train, test in folds:
        assert not set(train) & set(test) and all(engines[i] == name for i in test)
    scorable = {name: (tr, te) for name, tr, te in cross_engine_splits(engines, labels)}
    assert sorted(scorable) == ["espeak-ng", "flite"]  # piper's one voice is us only: nothing to score
    for tr, te in scorable.values():
        assert set(labels[tr]) == set(labels[te]) == {0, 1}


def test_splits_reject_what_they_cannot_split():
    with pytest.raises(ValueError, match="at least two groups"):
        list(group_splits(["flite"] * 3))
    with pytest.raises(ValueError, match="differ in length"):
        list(cross_engine_splits(["a", "b"], [0]))
    tr, te = next(cross_engine_splits(["a", "a", "a", "b", "b"], [0, 1, 2, 0, 1]))[1:]
    assert tr.tolist() == [3, 4] and te.tolist() == [0, 1]  # class 2 is absent from the train side


def test_real_recordings_carry_only_documented_labels_and_join_the_speech_set(tmp_path):
    clips = R.clips()
    assert [c.name for c in clips if c.gender] == ["bundled/jfk.wav"]
    assert len(clips) == 13 and all(c.transcript for c in clips)
    assert all(R.load(c).size / 16000 > 0.5 for c in clips)
    counts = build_speech(tmp_path / "s", 3, seed=0, real=True)
    assert counts == {"speech": {"speech": 3, "non-speech": 3}}
    rows = read_dataset(tmp_path / "s").rows
    assert [r["source"] for r in rows if r["speech"] == "speech"] == [f"real: {c.name}" for c in clips[:3]]
