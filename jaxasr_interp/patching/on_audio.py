"""Component sweeps on audio files: the work behind ``jaxasr-interp patch``.

:func:`sweep_audio` transcribes one file greedily, teacher-forces that transcript, and sweeps one
component family over an alpha grid towards a reference run (seeded white noise, another audio
file) or towards zero; :func:`sweep_statistics` reduces the sweep to per-component numbers over
:func:`transcript_positions`. :func:`decode_audio` adds edited greedy transcripts with
behavioural metrics (WER against the clean transcript, repetition). Over several files,
:func:`pooled` averages the per-file statistics, :func:`alpha_curves` gives one curve per layer
and :func:`largest_drop` the component and alpha that hurt a file most.

Shapes: statistics are ``[L, P, A]`` (layers, patches: heads for head families else 1, alphas).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import compute_dtype
from jaxasr_interp.patching.decoding import behaviour, family_decode_sweep, ids_to_text
from jaxasr_interp.patching.reference import reference_activations
from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep, is_head_family
from jaxasr_interp.whisper.api import encode_batch, transcribe_ids
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.tokenizer import teacher_tokens

STATISTICS = ("logprob", "logit", "top_changed")


def transcript_positions(width: int, n_prompt: int, n_real: int) -> np.ndarray:
    """``[width - 1]`` bool: the teacher-forced positions that predict the transcript.

    Position ``t`` predicts token ``t + 1``; the sequence is ``n_prompt`` prompt tokens, the
    transcript and end-of-text (``n_real`` tokens in all), padded to ``width``. The positions
    kept run from the prompt's last token (predicting the first transcript token) to the last
    transcript token (predicting end-of-text)."""
    valid = np.arange(width - 1) >= n_prompt - 1
    valid &= np.arange(width - 1) < n_real - 1
    return valid


def sweep_statistics(patched: dict, clean: dict, positions) -> dict:
    """Per component, from :func:`.sweeps.component_sweep`'s ``(patched, clean)``: the mean
    change of the clean tokens' log-probability (``logprob``) and logit (``logit``) over
    ``positions`` ([T - 1] bool), and the fraction of those positions whose top-1 token changed
    (``top_changed``); each ``[L, P, A]`` numpy."""
    stats = {k: (np.asarray(patched[k]) - np.asarray(clean[k]))[..., positions].mean(-1)
             for k in ("logprob", "logit")}
    stats["top_changed"] = (np.asarray(patched["top"]) != np.asarray(clean["top"]))[..., positions].mean(-1)
    return stats


def sweep_audio(model, path, family: str, alphas, *, mode: str = "interpolate", reference=None,
                width: int = 64, dtype=None, precision="highest"):
    """Sweep ``family`` over ``alphas`` on one audio file, teacher-forced on its transcript.

    The file is transcribed greedily (at most ``width`` tokens with prompt and end-of-text),
    the transcript padded to ``width`` tokens, and every layer (and head) of the family patched
    towards the ``reference`` run (None: seeded white noise; or an audio path) or, with
    ``mode="zero"``, ablated. Returns ``(ids, tokens, ref, stats)``: the transcript's token ids,
    the teacher-forced tokens ``[width]``, the reference's stacked site activations (None for
    ``mode="zero"``) and :func:`sweep_statistics` (dict of ``[L, P, A]``). ``dtype`` /
    ``precision``: of the transcription and the sweep (None: the parameters' own dtype)."""
    tok, site = model.tokenizer, FAMILIES[family]
    n_prompt = len(tok.prompt())
    numerics = dict(dtype=compute_dtype(dtype, model.params), precision=precision)
    ids = transcribe_ids(model, [path], batch_size=1, max_new_tokens=width - n_prompt - 1, **numerics)[0]
    tokens = jnp.asarray(teacher_tokens(tok.prompt(), ids, tok.eot, width), jnp.int32)
    ref = None if mode == "zero" else reference_activations(model, tokens, [site], reference, **numerics)[site]
    mel = log_mel(load_audio(path), n_mels=model.dims.n_mels)
    patched, clean = component_sweep(model.params, mel, tokens, ref, jnp.asarray(alphas), dims=model.dims,
                                     family=family, mode=mode, **numerics)
    positions = transcript_positions(width, n_prompt, n_prompt + len(ids) + 1)
    return ids, tokens, ref, sweep_statistics(patched, clean, positions)


def decode_audio(model, path, family: str, tokens, ref, alpha: float, *, mode: str = "interpolate",
                 dtype=None, precision="highest") -> list[dict]:
    """Edited greedy transcripts of one audio file, one per component of a decoder ``family``
    patched at ``alpha`` (``tokens`` and ``ref`` from :func:`sweep_audio`; decoding is limited
    to the transcript's width). Each row: ``layer``, ``head`` (None for layer families),
    ``alpha`` and :func:`.decoding.behaviour` of the transcript against the clean one.
    ``dtype`` / ``precision`` as :func:`sweep_audio`."""
    dims, tok = model.dims, model.tokenizer
    n_prompt = len(tok.prompt())
    numerics = dict(dtype=compute_dtype(dtype, model.params), precision=precision)
    feats = encode_batch(model.params, log_mel(load_audio(path), n_mels=dims.n_mels)[None], dims=dims,
                         **numerics)[0]
    ids, index = family_decode_sweep(model.params, feats, jnp.asarray(tok.prompt(), jnp.int32), tok.eot, ref,
                                     family=family, alphas=[alpha], dims=dims, mode=mode,
                                     max_new_tokens=tokens.shape[0] - n_prompt - 1, **numerics)
    clean = tok.decode(list(np.asarray(tokens[n_prompt:])))
    heads = is_head_family(family)
    return [dict(layer=int(layer), head=int(head) if heads else None, alpha=alpha,
                 **behaviour(ids_to_text(tok, row), reference=clean)) for (layer, head, _), row in zip(index, ids)]


def pooled(per_file) -> np.ndarray:
    """Mean over files of one statistic (each file's ``[L, P, A]`` array or nested list), in
    float64."""
    return np.mean([np.asarray(v, np.float64) for v in per_file], axis=0)


def alpha_curves(pooled_stat, family: str) -> dict:
    """``{"layer l": [A] curve}`` from a pooled ``[L, P, A]`` statistic: for head families the
    strongest (lowest) head of each layer at each alpha, else the layer itself."""
    pooled_stat = np.asarray(pooled_stat)
    heads = is_head_family(family)
    return {f"layer {layer}": pooled_stat[layer].min(0) if heads else pooled_stat[layer, 0]
            for layer in range(pooled_stat.shape[0])}


def largest_drop(stat) -> tuple[tuple, float]:
    """``((layer, patch, alpha index), value)`` of the lowest entry of an ``[L, P, A]``
    statistic (the largest drop of the clean tokens' log-probability)."""
    worst = np.unravel_index(int(np.argmin(stat)), np.shape(stat))
    return tuple(int(i) for i in worst), float(np.min(stat))
