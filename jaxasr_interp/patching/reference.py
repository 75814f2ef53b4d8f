"""Reference runs: the activations a patch is taken from.

The paper's reference input is white noise: :func:`white_noise` makes it reproducibly (seeded
numpy, outside any traced code), and :func:`reference_activations` runs it, or any audio the
user gives, through the model teacher-forced with the *clean* run's decoder tokens, so that
every captured site lines up position by position with the clean run.
"""

from __future__ import annotations

import numpy as np

from jaxasr_interp.whisper.audio import N_SAMPLES, SAMPLE_RATE, load_audio, log_mel
from jaxasr_interp.whisper.model import forward


def white_noise(seconds: float = N_SAMPLES / SAMPLE_RATE, *, seed: int = 0, std: float = 0.1,
                rng: np.random.Generator | None = None, n_samples: int | None = None) -> np.ndarray:
    """Seeded Gaussian white noise at 16 kHz (float32). ``std`` 0.1 is about -20 dBFS RMS,
    the level of ordinary speech recordings. ``rng``: draw from this generator instead of a
    fresh one seeded with ``seed`` (the dataset builders continue their own stream);
    ``n_samples``: the exact length, instead of ``round(seconds * 16000)``."""
    rng = np.random.default_rng(seed) if rng is None else rng
    n = int(round(seconds * SAMPLE_RATE)) if n_samples is None else int(n_samples)
    return (std * rng.standard_normal(n)).astype(np.float32)


def reference_activations(model, tokens, capture, reference=None, *, seed: int = 0,
                          std: float = 0.1, **forward_kwargs) -> dict:
    """Captured sites of the reference input (white noise unless ``reference`` is a path or a
    16 kHz array), teacher-forced with ``tokens`` (the clean run's decoder tokens)."""
    audio = white_noise(seed=seed, std=std) if reference is None else load_audio(reference)
    mel = log_mel(audio, n_mels=model.dims.n_mels)
    return forward(model.params, mel, tokens, dims=model.dims, capture=capture, **forward_kwargs)[1]
