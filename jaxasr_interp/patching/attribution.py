"""Attribution patching: the first-order estimate of every patch's effect in one backward pass.

Every component of every requested family gets a scalar weight ``w`` (0 in the clean run);
the edit at its site is ``interpolate(ref, mask = sum_p w[l, p] * patch_mask[p])`` (or zero
ablation). With all weights at 0 the pass is the clean run, and ``d score / d w[l, p]`` is
exactly the derivative of the patch's alpha curve at alpha = 0, i.e. the linear estimate of
its full (alpha = 1) effect, ``grad . (ref - clean)`` summed over the component's slice. One
``jax.grad`` of one forward pass gives it for all families, layers and heads at once.

The score is a weighted sum over positions of a :func:`.patching.readout` metric:
``"logit"`` / ``"logprob"`` of the clean token, or ``"logit_diff"`` = contrast logit minus
clean logit (positive when the contrast token wins). :func:`attribution_batch` does the same
for a batch of utterances, the batch split over all devices. :func:`sweep_effect` turns a real
:func:`.patching.component_sweep` into the same score differences, and
:func:`rank_correlation` compares the two.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.model import forward
from jaxasr_interp.core.dtypes import as_precision, compute_dtype
from jaxasr_interp.core.edits import interpolate
from jaxasr_interp.core.grid import weighted_mask
from jaxasr_interp.core.sharding import map_chunks
from jaxasr_interp.patching.sweeps import FAMILIES, family_of, local_masks, readout, reference_for
from jaxasr_interp.whisper.sites import n_layers

METRICS = ("logit", "logprob", "logit_diff")


def score(metrics: dict, position_weights, metric: str):
    """Weighted sum over positions (the last axis) of one readout metric."""
    if metric == "logit_diff":
        value = metrics["contrast_logit"] - metrics["logit"]
    elif metric in ("logit", "logprob"):
        value = metrics[metric]
    else:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return jnp.sum(value * position_weights, axis=-1)


def _checked(metric: str, families, refs, mode: str, dims: Dims, n_tokens: int, batch=None):
    """(families as family names, {family: the reference's site or zeros}); ``batch``: the
    number of utterances, to which zero references are broadcast."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    families = tuple(family_of(f) for f in families)
    refs = {f: reference_for(mode, (refs or {}).get(f), FAMILIES[f], dims, n_tokens) for f in families}
    if batch is not None and mode == "zero":
        refs = {f: jnp.broadcast_to(r, (batch,) + r.shape) for f, r in refs.items()}
    return families, refs


def attribution_patching(params, mel, tokens, refs: dict, position_weights, contrast=None, *,
                         dims: Dims, families: tuple, metric: str = "logprob",
                         mode: str = "interpolate", dtype=None, precision="highest", remat: bool = False):
    """Linear estimates of the score change of every patch (alpha 0 -> 1) of ``families``.

    ``refs`` {family: the reference's stacked site} (unused for ``mode="zero"``: zero ablation
    is interpolation towards zeros, the same compiled program), ``position_weights`` [T - 1]
    -> ``({family: [L, P]}, clean score)``; P = heads for head families, else 1 (the layout of
    :func:`.patching.component_sweep` without the alpha axis). ``dtype``: ``"float32"`` /
    ``"bfloat16"`` (None: the parameters' own); ``precision``: the matmul precision;
    ``remat``: recompute each layer in the backward pass instead of keeping every layer's
    attention (large models: large-v3's attribution fits a v5e-8 slice only with it, see
    docs/scale.md; the estimates agree with ``remat=False`` to float32 rounding).
    """
    families, refs = _checked(metric, families, refs, mode, dims, jnp.shape(tokens)[0])
    return _attribution(params, mel, tokens, refs, position_weights, contrast, dims=dims,
                        families=families, metric=metric, dtype=compute_dtype(dtype, params),
                        precision=as_precision(precision), remat=remat)


def attribution_batch(params, mels, tokens, refs: dict, position_weights, contrast=None, *,
                      dims: Dims, families: tuple, metric: str = "logprob", mode: str = "interpolate",
                      chunk: int | None = None, dtype=None, precision="highest", remat: bool = False):
    """:func:`attribution_patching` of B utterances in one compiled program, the batch split over
    all devices (``chunk`` utterances per device at a time; None: all at once).

    ``mels`` [B, n_mels, frames], ``tokens`` [B, T], ``refs`` {family: [B, L, ...]},
    ``position_weights`` [B, T - 1], ``contrast`` [B, T - 1] or None ->
    ``({family: [B, L, P]}, clean scores [B])``. ``remat``: as :func:`attribution_patching`.
    """
    families, refs = _checked(metric, families, refs, mode, dims, jnp.shape(tokens)[1], len(mels))
    return _attribution_many(params, mels, tokens, refs, position_weights, contrast, dims=dims,
                             families=families, metric=metric, chunk=chunk,
                             dtype=compute_dtype(dtype, params), precision=as_precision(precision),
                             remat=remat)


def _attribution_one(params, mel, tokens, refs, position_weights, contrast, *, dims, families, metric,
                     dtype, precision, remat=False):
    weights = {f: jnp.zeros((n_layers(FAMILIES[f], dims), local_masks(f, dims).shape[0])) for f in families}

    def fn(ws):
        edits = {FAMILIES[f]: interpolate(refs[f], 1.0, mask=weighted_mask(ws[f], local_masks(f, dims)))
                 for f in families}
        _, acts = forward(params, mel, tokens, dims=dims, edits=edits, capture=["decoder.ln_final"],
                          dtype=dtype, precision=precision, remat=remat)
        return score(readout(acts["decoder.ln_final"], params, tokens, contrast), position_weights, metric)

    clean, grads = jax.value_and_grad(fn)(weights)
    return grads, clean


_STATIC = ("dims", "families", "metric", "dtype", "precision", "remat")
_attribution = jax.jit(_attribution_one, static_argnames=_STATIC)


@functools.partial(jax.jit, static_argnames=_STATIC + ("chunk",))
def _attribution_many(params, mels, tokens, refs, position_weights, contrast, *, chunk, **static):
    one = lambda x: _attribution_one(params, *x, **static)
    return map_chunks(jax.vmap(one), (mels, tokens, refs, position_weights, contrast), chunk)


def sweep_effect(patched: dict, clean: dict, position_weights, metric: str = "logprob"):
    """Score changes of a real sweep: [L, P, A] from ``component_sweep``'s (patched, clean)."""
    return score(patched, position_weights, metric) - score(clean, position_weights, metric)


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of two equally shaped arrays (flattened); nan if constant."""
    from scipy.stats import spearmanr
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)
