"""Attribution patching: the first-order estimate of every patch's effect in one backward pass.

Every component of every requested family gets a scalar weight ``w`` (0 in the clean run);
the edit at its site is ``interpolate(ref, mask = sum_p w[l, p] * patch_mask[p])`` (or zero
ablation). With all weights at 0 the pass is the clean run, and ``d score / d w[l, p]`` is
exactly the derivative of the patch's alpha curve at alpha = 0, i.e. the linear estimate of
its full (alpha = 1) effect, ``grad . (ref - clean)`` summed over the component's slice. One
``jax.grad`` of one forward pass gives it for all families, layers and heads at once.

The score is a weighted sum over positions of a :func:`.patching.readout` metric:
``"logit"`` / ``"logprob"`` of the clean token, or ``"logit_diff"`` = contrast logit minus
clean logit (positive when the contrast token wins). :func:`sweep_effect` turns a real
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
from jaxasr_interp.core.edits import interpolate
from jaxasr_interp.core.grid import weighted_mask
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


def attribution_patching(params, mel, tokens, refs: dict, position_weights, contrast=None, *,
                         dims: Dims, families: tuple, metric: str = "logprob",
                         mode: str = "interpolate", precision="highest"):
    """Linear estimates of the score change of every patch (alpha 0 -> 1) of ``families``.

    ``refs`` {family: the reference's stacked site} (unused for ``mode="zero"``: zero ablation
    is interpolation towards zeros, the same compiled program), ``position_weights`` [T - 1]
    -> ``({family: [L, P]}, clean score)``; P = heads for head families, else 1 (the layout of
    :func:`.patching.component_sweep` without the alpha axis).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    families = tuple(family_of(f) for f in families)
    n_tokens = jnp.shape(tokens)[0]
    refs = {f: reference_for(mode, (refs or {}).get(f), FAMILIES[f], dims, n_tokens) for f in families}
    return _attribution(params, mel, tokens, refs, position_weights, contrast, dims=dims,
                        families=families, metric=metric, precision=precision)


@functools.partial(jax.jit, static_argnames=("dims", "families", "metric", "precision"))
def _attribution(params, mel, tokens, refs, position_weights, contrast, *, dims, families, metric, precision):
    weights = {f: jnp.zeros((n_layers(FAMILIES[f], dims), local_masks(f, dims).shape[0])) for f in families}

    def fn(ws):
        edits = {FAMILIES[f]: interpolate(refs[f], 1.0, mask=weighted_mask(ws[f], local_masks(f, dims)))
                 for f in families}
        _, acts = forward(params, mel, tokens, dims=dims, edits=edits, capture=["decoder.ln_final"],
                          precision=precision)
        return score(readout(acts["decoder.ln_final"], params, tokens, contrast), position_weights, metric)

    clean, grads = jax.value_and_grad(fn)(weights)
    return grads, clean


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
