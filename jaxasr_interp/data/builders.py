"""Builders of the paper's probing datasets (format: :mod:`jaxasr_interp.data`).

Each ``build_*(out, ..., seed=0)`` writes a dataset directory and returns its class counts
``{column: {class: items}}``; the same arguments and seed give the same files. Classes are
balanced by construction (item ``i`` gets class ``i % n_classes``) except in the
hallucination set, whose classes come from the model's errors.

* ``build_gender``: espeak-ng male (``+m1..m8``) vs female (``+f1..f5``) voice variants over
  en-us / en-gb, random sentence, speed and pitch; ``piper=True`` adds the bundled piper
  voice (male, en-US) as a share of the male items. Labels: the voice's declared gender.
* ``build_accent``: espeak-ng accents us / gb-rp / scottish / caribbean, random voice variant.
* ``build_noise``: synthesized speech, half clean and half mixed with white or pink noise at an
  SNR drawn from ``snrs`` (one utterance is never in both classes, so folds cannot pair them).
* ``build_speech``: speech vs non-speech; non-speech cycles noise / tones / silence;
  ``real=True`` makes the first speech items the real recordings of :mod:`.real`.
* ``build_hallucination``: a pool of hard utterances (fast speech, noise), transcribed greedily
  by ``model``; WER against the synthesis text; zero-WER items vs the ``k`` highest-WER ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from jaxasr_interp.data import synth
from jaxasr_interp.patching.reference import white_noise
from jaxasr_interp.whisper.audio import SAMPLE_RATE
from jaxasr_interp.whisper.text_metrics import normalize

GENDER_VARIANTS = {"male": [f"m{i}" for i in range(1, 9)], "female": [f"f{i}" for i in range(1, 6)]}
ACCENTS = {"us": "en-us", "gb-rp": "en-gb-x-rp", "scottish": "en-gb-scotland", "caribbean": "en-029"}
ESPEAK_SOURCE = "espeak-ng {version} voice {voice}, speed {speed}, pitch {pitch}"


def _espeak_version() -> str:
    import subprocess
    out = subprocess.run([synth.require_espeak(), "--version"], capture_output=True, text=True).stdout
    return out.split(":")[1].split()[0] if ":" in out else "?"


def _save(root: Path, i: int, audio: np.ndarray) -> str:
    rel = f"audio/{i:05d}.wav"
    sf.write(root / rel, audio, SAMPLE_RATE, subtype="PCM_16")
    return rel


def _prepare(out, n: int) -> Path:
    if n < 2:
        raise ValueError(f"a dataset needs at least 2 items per class, got {n}")
    root = Path(out)
    if (root / "labels.csv").exists():
        raise FileExistsError(f"{root} already holds a dataset; choose another directory")
    (root / "audio").mkdir(parents=True, exist_ok=True)
    return root


def _noise(kind: str, rng, seconds: float) -> np.ndarray:
    """White or pink noise of ``int(16000 * seconds)`` samples from the builder's generator."""
    if kind == "white":
        return white_noise(rng=rng, n_samples=int(SAMPLE_RATE * seconds))
    return synth.pink_noise(rng, seconds)


def _speak(rng, voice: str, text: str, version: str, speed=(140, 190)):
    s, p = int(rng.integers(*speed)), int(rng.integers(30, 70))
    return synth.espeak(text, voice, speed=s, pitch=p), ESPEAK_SOURCE.format(version=version, voice=voice, speed=s, pitch=p)


def build_gender(out, n_per_class: int = 40, *, seed: int = 0, piper: bool = False) -> dict:
    from jaxasr_interp.data import write_dataset
    root, rng, version = _prepare(out, n_per_class), np.random.default_rng(seed), _espeak_version()
    voice = synth.piper_voice() if piper else None
    items, classes = [], ["male", "female"]
    for i, text in enumerate(synth.sentences(rng, 2 * n_per_class)):
        gender = classes[i % 2]
        if voice is not None and gender == "male" and rng.random() < 0.25:
            audio, source = synth.piper_speech(voice, text), "piper en_US-joe-medium (male)"
        else:
            name = f"{rng.choice(['en-us', 'en-gb'])}+{rng.choice(GENDER_VARIANTS[gender])}"
            audio, source = _speak(rng, name, text, version)
        items.append(dict(path=_save(root, i, audio), transcript=text, source=source, gender=gender))
    return write_dataset(root, items, name="gender", seed=seed, classes={"gender": classes},
                         label_source="synthesized: gender declared by the espeak-ng voice variant "
                                      "(m* male, f* female) or the piper voice card",
                         params=dict(n_per_class=n_per_class, piper=piper))


def build_accent(out, n_per_class: int = 20, *, seed: int = 0) -> dict:
    from jaxasr_interp.data import write_dataset
    root, rng, version = _prepare(out, n_per_class), np.random.default_rng(seed), _espeak_version()
    names = list(ACCENTS)
    items = []
    for i, text in enumerate(synth.sentences(rng, len(names) * n_per_class)):
        accent = names[i % len(names)]
        variants = GENDER_VARIANTS["male"] + GENDER_VARIANTS["female"]
        audio, source = _speak(rng, f"{ACCENTS[accent]}+{rng.choice(variants)}", text, version)
        items.append(dict(path=_save(root, i, audio), transcript=text, source=source, accent=accent))
    return write_dataset(root, items, name="accent", seed=seed, classes={"accent": names},
                         label_source="synthesized: the espeak-ng accent (language voice) used",
                         params=dict(n_per_class=n_per_class))


def _any_speech(rng, text, version, speed=(140, 190)):
    accent = str(rng.choice(list(ACCENTS)))
    variant = str(rng.choice(GENDER_VARIANTS["male"] + GENDER_VARIANTS["female"]))
    return _speak(rng, f"{ACCENTS[accent]}+{variant}", text, version, speed)


def _voice_labels(source: str) -> dict:
    """Gender, accent and speaking rate of an espeak-ng item, read back from its source."""
    voice = source.split("voice ")[1].split(",")[0]
    lang, variant = voice.split("+")
    speed = int(source.split("speed ")[1].split(",")[0])
    return dict(gender="male" if variant[0] == "m" else "female",
                accent={v: k for k, v in ACCENTS.items()}[lang], rate="fast" if speed >= 165 else "slow")


def build_noise(out, n_per_class: int = 40, *, snrs=(0.0, 5.0, 10.0), seed: int = 0) -> dict:
    from jaxasr_interp.data import write_dataset
    root, rng, version = _prepare(out, n_per_class), np.random.default_rng(seed), _espeak_version()
    items = []
    for i, text in enumerate(synth.sentences(rng, 2 * n_per_class)):
        audio, source = _any_speech(rng, text, version)
        voice = _voice_labels(source)
        snr, kind = "", ""
        if i % 2:
            snr, kind = float(rng.choice(snrs)), str(rng.choice(["white", "pink"]))
            noise = _noise(kind, rng, audio.size / SAMPLE_RATE)
            audio, source = synth.mix_at_snr(audio, noise, snr), f"{source} + {kind} noise at {snr:g} dB SNR"
        items.append(dict(path=_save(root, i, audio), transcript=text, source=source,
                          noisy="noisy" if i % 2 else "clean", snr_db=snr, **voice))
    # The voice's gender, accent and rate are extra (unbalanced) targets of the same items.
    classes = {"noisy": ["clean", "noisy"], "gender": ["male", "female"], "accent": list(ACCENTS),
               "rate": ["slow", "fast"]}
    return write_dataset(root, items, name="noise", seed=seed, classes=classes,
                         label_source="constructed: noise added by the builder (class known by construction); "
                                      "gender/accent/rate: the espeak-ng voice variant, language and speed",
                         params=dict(n_per_class=n_per_class, snrs=list(snrs)))


def build_speech(out, n_per_class: int = 40, *, seed: int = 0, real: bool = False) -> dict:
    """``real=True``: the first speech items are the real recordings (:func:`.real.clips`)."""
    from jaxasr_interp.data import real as real_clips
    from jaxasr_interp.data import write_dataset
    root, rng, version = _prepare(out, n_per_class), np.random.default_rng(seed), _espeak_version()
    kinds, clips = ("noise", "tones", "silence"), real_clips.clips()[:n_per_class] if real else []
    items = []
    for i in range(2 * n_per_class):
        if i % 2 == 0 and i // 2 < len(clips):
            clip = clips[i // 2]
            audio, text, source, kind = real_clips.load(clip), clip.transcript, f"real: {clip.name}", "speech"
        elif i % 2 == 0:
            text = synth.sentences(rng, 1)[0]
            audio, source = _any_speech(rng, text, version)
            kind = "speech"
        else:
            kind, text = kinds[(i // 2) % 3], ""
            seconds = float(rng.uniform(1.5, 5.0))
            if kind == "noise":
                kind_noise = str(rng.choice(["white", "pink"]))
                audio, source = _noise(kind_noise, rng, seconds), f"{kind_noise} noise"
            else:
                audio, source = getattr(synth, kind)(rng, seconds), kind
        items.append(dict(path=_save(root, i, audio), transcript=text, source=source,
                          speech="speech" if kind == "speech" else "non-speech", kind=kind))
    return write_dataset(root, items, name="speech", seed=seed,
                         classes={"speech": ["speech", "non-speech"]},
                         label_source="constructed: synthesized speech vs generated noise, tones and silence"
                                      + (f"; {len(clips)} speech items are real recordings" if real else ""),
                         params=dict(n_per_class=n_per_class, **(dict(real=True) if real else {})))


def build_hallucination(out, model, pool: int = 120, k: int = 30, *, seed: int = 0,
                        batch_size: int = 8) -> dict:
    """Zero-WER items vs the ``k`` highest-WER items of ``pool`` hard utterances (the zero
    class is sampled down to ``k`` items when larger, for balance)."""
    import jiwer

    from jaxasr_interp.data import write_dataset
    from jaxasr_interp.whisper.api import transcribe
    root, rng, version = _prepare(out, k), np.random.default_rng(seed), _espeak_version()
    texts, audios, sources = synth.sentences(rng, pool), [], []
    for i, text in enumerate(texts):
        audio, source = _any_speech(rng, text, version, speed=(150, 320))
        if rng.random() < 0.6:  # noise on most items so that the model errs on some
            snr = float(rng.uniform(-8.0, 10.0))
            audio, source = synth.mix_at_snr(audio, synth.pink_noise(rng, audio.size / SAMPLE_RATE), snr), f"{source} + pink noise at {snr:.1f} dB"
        audios.append(audio)
        sources.append(source)
    hyps = transcribe(model, audios, batch_size=batch_size, progress=True)
    wer = np.asarray([jiwer.wer(normalize(t, "plain"), normalize(h, "plain") or "<empty>") for t, h in zip(texts, hyps)])
    zero = np.flatnonzero(wer == 0)
    worst = np.argsort(-wer, kind="stable")[:k]
    if len(zero) < 2 or wer[worst].min() == 0:
        raise ValueError(f"the pool of {pool} gave {len(zero)} zero-WER items and {int((wer > 0).sum())} with errors; "
                         "enlarge --pool or lower k")
    zero = np.sort(rng.choice(zero, size=min(k, len(zero)), replace=False))
    items = []
    for j, (i, label) in enumerate([(i, "correct") for i in zero] + [(i, "hallucination") for i in worst]):
        items.append(dict(path=_save(root, j, audios[i]), transcript=texts[i], source=sources[i],
                          outcome=label, wer=f"{wer[i]:.4f}", hypothesis=hyps[i].strip()))
    return write_dataset(root, items, name="hallucination", seed=seed,
                         classes={"outcome": ["correct", "hallucination"]},
                         label_source=f"model errors: WER of {model.source} greedy transcripts against the synthesis text "
                                      f"(zero WER vs the {k} highest of {pool})",
                         params=dict(pool=pool, k=k, model=model.source))
