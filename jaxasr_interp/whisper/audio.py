"""Audio front end: files or arrays in, Whisper log-mel features out.

Contract:

* ``load_audio`` returns a 1-D float32 numpy array, mono, at ``sr`` (16 kHz), samples in
  [-1, 1] for PCM files. It never truncates: long audio comes back whole.
* ``log_mel`` takes ONE utterance (1-D, numpy or JAX) and returns float32 ``[n_mels, 3000]``:
  the first 30 s window, zero-padded if shorter. Audio longer than 30 s is cut to its first
  30 s and, for concrete (non-traced) input, a ``UserWarning`` says so. It is pure ``jax.numpy``:
  ``jax.jit(log_mel, static_argnames="n_mels")`` and ``jax.vmap`` over a batch of equal-length
  audio both work. It matches transformers' ``WhisperFeatureExtractor`` to ~1e-5.
* Every bad input raises ``AudioError`` (a ``ValueError``) with a one-line message saying what
  to do; a missing file raises ``AudioFileNotFoundError``, which is also a ``FileNotFoundError``.
  A truncated WAV (its header promises more data than the file holds, as after an interrupted
  copy or recording) is refused too: libsndfile would silently return the frames present.
* ``sample_path`` / ``sample_transcripts`` give the bundled public-domain speech clips.
"""

from __future__ import annotations

import functools
import json
import math
import struct
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16000  # Whisper was trained on 16 kHz audio
N_FFT = 400  # 25 ms analysis window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop at 16 kHz -> 100 frames per second
CHUNK_LENGTH = 30  # seconds of audio the encoder sees at once
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in one window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 frames: the STFT's extra last frame is dropped

SAMPLES_DIR = Path(__file__).parents[1] / "samples"  # jaxasr_interp/samples


class AudioError(ValueError):
    """A bad audio input (unreadable, empty, non-finite, wrong shape)."""


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The audio path does not exist (catchable as either parent)."""


def _check_samples(x: np.ndarray, what: str) -> np.ndarray:
    if x.size == 0:
        raise AudioError(f"{what} has no samples (0-length audio); pass a non-empty recording")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{what} contains NaN or inf samples; clean the signal "
                         "(e.g. np.nan_to_num) before passing it in")
    return x


def check_audio_path(path) -> Path:
    """The checks of a path before any audio is read: it exists and is not a directory."""
    path = Path(path)
    if not path.exists():
        raise AudioFileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise AudioError(f"{path} is a directory; pass an audio file (wav, flac, ogg, ...)")
    return path


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    check_audio_path(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(f"cannot read {path} as audio ({reason}); pass a wav/flac/ogg file, "
                         "or decode it yourself and pass a numpy array") from None
    _check_not_truncated(path, data.shape[0])
    # Mean rather than picking a channel: keeps the energy of sources panned to either side.
    return _check_samples(data.mean(axis=1), f"audio file {path}"), rate


# WAVE format tags whose block_align is the size of one frame (PCM, float, A-law, mu-law, extensible).
_FRAME_FORMATS = (0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE)
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streamed WAVs and RF64 leave the data size open


def _wav_data_chunk(path: Path) -> tuple[int, int, int | None] | None:
    """(bytes the data chunk's header declares, bytes present, frame size or None) of a RIFF/RIFX
    WAVE file; None for other files or an open-ended data size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        frame = None
        for _ in range(10000):  # chunk walk; a corrupt size ends it at end of file
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, length = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if name == b"data":
                return (None if length in _UNKNOWN_SIZES else (length, size - f.tell(), frame))
            body = f.read(min(length, 16)) if name == b"fmt " else b""
            if len(body) >= 14:
                tag, align = struct.unpack(endian + "H", body[:2])[0], struct.unpack(endian + "H", body[12:14])[0]
                frame = align if tag in _FRAME_FORMATS and align > 0 else None
            f.seek(length + (length & 1) - len(body), 1)
    return None


def _check_not_truncated(path: Path, frames_read: int) -> None:
    """Refuse a WAV whose data chunk is cut short (libsndfile reads what is there, silently)."""
    chunk = _wav_data_chunk(path)
    if chunk is None or chunk[0] <= chunk[1]:
        return
    declared, present, frame = chunk
    if frame:
        counts = f"header says {declared // frame} frames, file holds {frames_read}"
    else:
        counts = f"header says {declared} data bytes, file holds {present}"
    raise AudioError(f"audio file {path} is truncated: {counts} ({present} of {declared} data bytes); "
                     "re-export or repair the file")


def _as_float_array(x) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise AudioError(f"audio array must be 1-D mono of shape (samples,), got shape {x.shape}; "
                         "mix channels to mono first (e.g. x.mean(axis=channel_axis))")
    if np.issubdtype(x.dtype, np.integer):
        # Integer PCM is full scale at 2**(bits-1); map it to [-1, 1) like soundfile does.
        return x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"audio array must be real floats or integer PCM, got dtype {x.dtype}")
    return x.astype(np.float32, copy=False)


def resample(audio: np.ndarray, source_sr: int, target_sr: int = SAMPLE_RATE) -> np.ndarray:
    """Resample 1-D audio by the exact rational factor target_sr / source_sr."""
    if source_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {source_sr} -> {target_sr}")
    if source_sr == target_sr:
        return audio
    # Polyphase filtering by up/down reduced by the gcd is exact for any pair of integer rates
    # (44.1k -> 16k is 160/441), anti-aliased, fast, and needs no ffmpeg/sox binary.
    g = math.gcd(int(source_sr), int(target_sr))
    out = resample_poly(audio.astype(np.float64), int(target_sr) // g, int(source_sr) // g)
    return out.astype(np.float32)


def load_audio(path_or_array, sr: int = SAMPLE_RATE, source_sr: int | None = None) -> np.ndarray:
    """Load a file (anything soundfile reads) or validate an array; return float32 mono at ``sr``.

    For an array, ``source_sr`` is its rate (default: already ``sr``); for a file the rate comes
    from the file, so passing ``source_sr`` is an error. Long audio is not truncated.
    """
    if isinstance(path_or_array, (str, Path)):
        if source_sr is not None:
            raise AudioError("source_sr applies to arrays only; a file carries its own sample rate")
        audio, rate = _read_file(Path(path_or_array))
    else:
        audio = _check_samples(_as_float_array(path_or_array), "audio array")
        rate = sr if source_sr is None else source_sr
    return resample(audio, rate, sr)


def pad_or_trim(audio, length: int = N_SAMPLES, *, axis: int = -1):
    """Zero-pad or cut ``audio`` along ``axis`` to exactly ``length`` (numpy or JAX in, same out)."""
    xp = jnp if isinstance(audio, jax.Array) else np
    audio = audio if xp is jnp else np.asarray(audio)
    n = audio.shape[axis]
    if n > length:
        keep = [slice(None)] * audio.ndim
        keep[axis] = slice(0, length)
        return audio[tuple(keep)]
    if n < length:
        widths = [(0, 0)] * audio.ndim
        widths[axis] = (0, length - n)
        return xp.pad(audio, widths)
    return audio


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney scale: linear below 1 kHz, logarithmic above (librosa/transformers "slaney").
    log_region = f >= 1000.0
    mel = 3.0 * f / 200.0
    mel[log_region] = 15.0 + np.log(f[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    log_region = m >= 15.0
    f = 200.0 * m / 3.0
    f[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_region] - 15.0))
    return f


@functools.lru_cache(maxsize=None)
def _mel_filters_f32(n_mels: int) -> np.ndarray:
    # float64 math then float32, exactly as transformers builds and applies its filterbank.
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array([0.0]))[0],
                                   _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], n_mels + 2))
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, N_FFT // 2 + 1)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / np.diff(edges)[:-1]
    up = slopes[:, 2:] / np.diff(edges)[1:]
    weights = np.maximum(0.0, np.minimum(down, up))
    weights *= 2.0 / (edges[2:] - edges[:-2])  # slaney area norm: ~equal energy per band
    filters = weights.T.astype(np.float32)
    filters.flags.writeable = False  # cached and shared between callers
    return filters


def mel_filters(n_mels: int = 80) -> np.ndarray:
    """Slaney mel filterbank, float32 ``[n_mels, N_FFT // 2 + 1]`` (read-only, cached)."""
    if not isinstance(n_mels, (int, np.integer)) or n_mels <= 0:
        raise AudioError(f"n_mels must be a positive int (80 or 128 for Whisper), got {n_mels!r}")
    return _mel_filters_f32(int(n_mels))


def _frames(x: jax.Array) -> jax.Array:
    """[N_FRAMES, N_FFT] centered STFT frames of a padded 30 s signal, without a gather table."""
    # Hop 160 and window 400 share a block of 80 samples: frame i is blocks 2i..2i+4.
    block = math.gcd(HOP_LENGTH, N_FFT)
    step, per_frame = HOP_LENGTH // block, N_FFT // block
    blocks = x[: (x.shape[-1] // block) * block].reshape(-1, block)
    span = step * (N_FRAMES - 1) + 1
    return jnp.concatenate([blocks[k: k + span: step] for k in range(per_frame)], axis=-1)


@functools.partial(jax.jit, static_argnames=("n_mels",))
def _log_mel_30s(audio: jax.Array, n_mels: int) -> jax.Array:
    # Center with reflect padding like torch.stft(center=True); only the first N_FRAMES frames
    # are built, which is the same as computing N_FRAMES + 1 and dropping the last.
    x = jnp.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n = jnp.arange(N_FFT, dtype=jnp.float32)
    window = 0.5 - 0.5 * jnp.cos(2.0 * jnp.pi * n / N_FFT)  # periodic Hann
    spectrum = jnp.fft.rfft(_frames(x) * window, axis=-1)
    power = (spectrum.real ** 2 + spectrum.imag ** 2).T  # [freq, frames]
    # HIGHEST: GPUs would otherwise run this float32 matmul in TF32 and miss the 1e-4 parity.
    mel = jnp.matmul(jnp.asarray(mel_filters(n_mels)), power, precision=jax.lax.Precision.HIGHEST)
    log_spec = jnp.log10(jnp.maximum(mel, 1e-10))
    log_spec = jnp.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def log_mel(audio, n_mels: int = 80, padding: int = 0) -> jax.Array:
    """Whisper log-mel features ``[n_mels, N_FRAMES]`` float32 of one 1-D utterance at 16 kHz.

    The audio is padded/trimmed to the first 30 s. Longer concrete input warns (UserWarning)
    that only the first 30 s are used; split long audio into windows yourself. ``padding``
    appends that many zero samples first (openai-whisper's signature); since the output is
    always one 30 s window, it cannot change the result. Batch with ``jax.vmap(log_mel)``.
    """
    if not isinstance(padding, (int, np.integer)) or padding < 0:
        raise AudioError(f"padding must be a non-negative int of samples, got {padding!r}")
    if not isinstance(audio, jax.Array):
        audio = _as_float_array(audio)
    if audio.ndim != 1:
        raise AudioError(f"log_mel takes one 1-D utterance of shape (samples,), got shape "
                         f"{audio.shape}; use jax.vmap(log_mel) for a batch")
    if audio.shape[0] == 0:
        raise AudioError("log_mel got 0-length audio; pass a non-empty recording")
    if audio.shape[0] > N_SAMPLES and not isinstance(audio, jax.core.Tracer):
        warnings.warn(f"audio is {audio.shape[0] / SAMPLE_RATE:.1f} s long; only the first "
                      f"{CHUNK_LENGTH} s are used", UserWarning, stacklevel=2)
    audio = jnp.asarray(audio, dtype=jnp.float32)
    if padding:
        audio = jnp.pad(audio, (0, int(padding)))
    return _log_mel_30s(pad_or_trim(audio, N_SAMPLES), n_mels=mel_filters(n_mels).shape[0])


def _available_samples() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.glob("*.wav"))


def sample_path(name: str = "jfk.wav") -> Path:
    """Path of a bundled public-domain speech clip (``.wav`` may be omitted)."""
    path = SAMPLES_DIR / (name if name.endswith(".wav") else name + ".wav")
    if Path(name).name != name or not path.is_file():
        raise AudioError(f"no bundled sample {name!r}; available: {', '.join(_available_samples())}")
    return path


def sample_transcripts() -> dict[str, str]:
    """Reference transcript of each bundled sample, keyed by file name (a fresh dict)."""
    with open(SAMPLES_DIR / "transcripts.json", encoding="utf-8") as f:
        return json.load(f)
