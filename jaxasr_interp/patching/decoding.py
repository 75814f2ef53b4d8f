"""Behavioural patching: edited greedy decoding for many patches at once, and its metrics.

:func:`decode_sweep` runs greedy decoding (the KV-cached loop of :mod:`.decoding`) under ``P``
patches of decoder sites in one compiled program: the patches are a ``lax.map`` in chunks of
``vmap``-ed decodings that share one encoder output and one cross-attention K/V computation.
Each patch's edits are ``{site: interpolate(refs[site], mask=weights[site][p])}`` (or zero
ablation), so a layer, a head, or a layer and a head together are all just weight arrays (made
by :mod:`jaxasr_interp.core.grid`; :func:`family_decode_sweep` sweeps a whole family).

Reference data is position-aligned: ``refs[site]`` [L, T_ref, ...] comes from the reference
run teacher-forced with the clean tokens (prompt + transcript, padded to a fixed length so
every utterance reuses one program); token positions past ``T_ref`` are left unedited.

:func:`behaviour` scores one transcript: WER against a reference text, whether it loops
(:func:`has_repetition`), whether a target word was produced.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.core.dtypes import as_precision, compute_dtype
from jaxasr_interp.core.edits import interpolate
from jaxasr_interp.core.sharding import map_chunks
from jaxasr_interp.patching.sweeps import family_grid, reference_for
from jaxasr_interp.whisper.text_metrics import compression_ratio, normalize, rate, word_errors, words


def decode_sweep(params, audio_features, prompt, eot, refs: dict, weights: dict, *, dims: Dims,
                 max_new_tokens: int, mode: str = "interpolate", chunk: int = 16, dtype=None,
                 precision="highest"):
    """Greedy ids [P, max_new_tokens] (end-of-text padded) of one utterance under P patches.

    ``audio_features`` [S, D] (clean encoder output), ``prompt`` [n_prompt] ids, ``refs``
    {decoder site: [L, T_ref, ...]} (unused for ``mode="zero"``), ``weights`` {site: [P, L, ...]}
    (alpha * mask of each patch, left-aligned like an edit mask). Plain argmax decoding, as
    :func:`.api.transcribe`. The P patches are split over all devices, ``chunk`` per device at
    a time (:func:`~jaxasr_interp.core.sharding.map_chunks`). ``dtype``: ``"float32"`` /
    ``"bfloat16"`` (None: the parameters' own); ``precision``: the matmul precision.
    """
    for site in weights:
        if not site.startswith("decoder.") or site in ("decoder.cross_attn.k", "decoder.cross_attn.v"):
            raise ValueError(f"decode_sweep patches decoder token sites, got {site!r}")
    n_tokens = jnp.shape(prompt)[0] + max_new_tokens
    refs = {site: reference_for(mode, (refs or {}).get(site), site, dims, n_tokens) for site in weights}
    return _decode_sweep(params, audio_features, prompt, eot, refs, weights, dims=dims,
                         max_new_tokens=max_new_tokens, chunk=chunk, dtype=compute_dtype(dtype, params),
                         precision=as_precision(precision))


@functools.partial(jax.jit, static_argnames=("dims", "max_new_tokens", "chunk", "dtype", "precision"))
def _decode_sweep(params, audio_features, prompt, eot, refs, weights, *, dims, max_new_tokens, chunk, dtype,
                  precision):
    zeros = logit_bias(dims.n_vocab, ())

    def one(w):
        edits = {site: interpolate(refs[site], 1.0, mask=w[site]) for site in w}
        return greedy_decode(params, audio_features[None], prompt, eot, zeros, zeros, dims=dims,
                             max_new_tokens=max_new_tokens, edits=edits, dtype=dtype,
                             precision=precision)[0]

    return map_chunks(jax.vmap(one), weights, chunk)


def family_decode_sweep(params, audio_features, prompt, eot, ref, *, family: str, alphas, dims: Dims,
                        max_new_tokens: int, mode: str = "interpolate", chunk: int = 16, dtype=None,
                        precision="highest"):
    """Edited greedy ids of every (layer, head or whole layer, alpha) patch of a decoder family
    -> ``(ids [N, max_new_tokens], index [N, 3])``, index rows (layer, head or 0, alpha index)
    as :func:`.sweeps.family_grid`. ``ref``: the reference's stacked site (None for
    ``mode="zero"``); the rest as :func:`decode_sweep`."""
    site, weights, index = family_grid(family, dims, alphas)
    ids = decode_sweep(params, audio_features, prompt, eot, {} if ref is None else {site: ref},
                       {site: jnp.asarray(weights)}, dims=dims, max_new_tokens=max_new_tokens,
                       mode=mode, chunk=chunk, dtype=dtype, precision=precision)
    return np.asarray(ids), index


def ids_to_text(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids]).strip()


def _run(w: list, n: int, start: int) -> int:
    """How many back-to-back copies of ``w[start:start + n]`` begin at ``start``."""
    gram, k = w[start:start + n], 1
    while w[start + k * n:start + (k + 1) * n] == gram:
        k += 1
    return k


def _is_loop(n: int, k: int, min_repeats: int, min_phrase: int) -> bool:
    return k >= min_repeats or (n >= min_phrase and k >= 2)


def has_repetition(text: str, *, min_repeats: int = 3, min_phrase: int = 3, max_n: int = 12) -> bool:
    """Does the transcript loop? Any word n-gram (n <= ``max_n``) repeated back to back at least
    ``min_repeats`` times, or a phrase of ``min_phrase``+ words said twice in a row ("how much
    they're going to be how much they're going to be"; "no no" is not a loop), or, for texts of
    40+ characters, openai/whisper's own loop signal, a gzip compression ratio above 2.4 (catches
    loops inside one "word", "hahaha...")."""
    w = words(text)
    for n in range(1, max_n + 1):
        if any(_is_loop(n, _run(w, n, s), min_repeats, min_phrase) for s in range(len(w) - n + 1)):
            return True
    return len(text) >= 40 and compression_ratio(text) > 2.4


def collapse_repeats(text: str, *, min_repeats: int = 3, min_phrase: int = 3, max_n: int = 12) -> str:
    """The transcript with each loop (as :func:`has_repetition` defines it) kept once, and a
    trailing partial copy (cut off by the length limit) dropped. Shortest periods first, so that
    "and then" x 4 becomes one "and then", not two."""
    w = words(text)
    changed = True
    while changed:
        changed = False
        for n in range(1, max_n + 1):
            for start in range(len(w) - n + 1):
                k = _run(w, n, start)
                if not _is_loop(n, k, min_repeats, min_phrase):
                    continue
                gram, rest = w[start:start + n], w[start + k * n:]
                if len(rest) < n and rest == gram[:len(rest)]:
                    rest = []
                w, changed = w[:start + n] + rest, True
                break
            if changed:
                break
    return " ".join(w)


def word_error_rate(reference: str, hypothesis: str) -> float:
    return rate(*word_errors(normalize(reference, "plain"), normalize(hypothesis, "plain")))


def behaviour(transcript: str, reference: str | None = None, target: str | None = None) -> dict:
    """Behavioural metrics of one (edited) transcript: the text, WER against ``reference``
    (None without one), repetition present or not, ``target`` word produced or not."""
    return dict(transcript=transcript,
                wer=None if reference is None else word_error_rate(reference, transcript),
                repetition=has_repetition(transcript),
                target_produced=None if target is None else target.lower() in words(transcript))
