"""Patch grids: the edit weights of many single patches, stacked on a leading patch axis.

A sweep patches one component at a time. A component is a *local mask*, its slice of one
layer of a site (for the heads of a ``[T, H, dh]`` site ``[H, 1, H]``, one row per head; for a
whole layer one ``[1, 1]`` row), placed at one layer of the site's ``[L, ...]`` edit weight and
scaled by ``alpha``. Every sweep (component, head and decoding sweeps, attribution patching,
the experiments, the CLI) builds its weights here, so a patch means the same thing everywhere::

    weights, index = patch_grid(local, n_layers, alphas)
    # weights[k] = alphas[a] * local[p] at layer l, zero at every other layer; (l, p, a) = index[k]
    edits = {site: interpolate(ref, 1.0, mask=weights[k])}

Patches are ordered layer-major, then local patch, then alpha. Host inputs (numpy, lists)
give numpy weights (no device program is compiled to build them); a jax array among the
inputs (traced alphas inside a ``jit``) gives jax weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _namespace(*arrays):
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def patch_grid(local, n_layers: int, alphas=(1.0,), *, layers=None, patches=None):
    """Every (layer, local patch, alpha) patch -> ``(weights [N, n_layers, ...], index [N, 3])``.

    ``local`` [P, ...]: the local masks of one layer; ``alphas`` [A]; ``layers`` / ``patches``:
    the layers and local patches to include (default: all). ``index[k]`` is the (layer, patch,
    alpha index) of patch ``k`` (int32, always numpy); N = len(layers) * len(patches) * A.
    """
    xp = _namespace(local, alphas)
    local, alphas = xp.asarray(local, xp.float32), xp.asarray(alphas, xp.float32)
    layers = list(range(n_layers)) if layers is None else [int(l) for l in layers]
    patches = list(range(local.shape[0])) if patches is None else [int(p) for p in patches]
    if any(not 0 <= l < n_layers for l in layers) or any(not 0 <= p < local.shape[0] for p in patches):
        raise IndexError(f"layers {layers} / patches {patches} out of range ({n_layers} layers, "
                         f"{local.shape[0]} patches per layer)")
    n_a, rest = alphas.shape[0], tuple(local.shape[1:])
    # alpha * mask of each (patch, alpha), [P' * A, ...]
    scaled = (local[np.asarray(patches)][:, None] * alphas.reshape((1, n_a) + (1,) * len(rest)))
    scaled = scaled.reshape((-1,) + rest)
    blocks = [_at_layer(xp, scaled, layer, n_layers) for layer in layers]
    index = np.asarray([(l, p, a) for l in layers for p in patches for a in range(n_a)], np.int32)
    return xp.concatenate(blocks), index.reshape(-1, 3)


def _at_layer(xp, scaled, layer: int, n_layers: int):
    """[N, ...] -> [N, n_layers, ...]: ``scaled`` at ``layer``, zero at every other layer."""
    shape = (scaled.shape[0], n_layers) + tuple(scaled.shape[1:])
    if xp is jnp:
        return jnp.zeros(shape, jnp.float32).at[:, layer].set(scaled)
    out = np.zeros(shape, np.float32)
    out[:, layer] = scaled
    return out


def join_sites(*grids: dict) -> dict:
    """Patch grids of different sites, one after the other on the patch axis:
    ``{site: [N_1 + N_2 + ..., L, ...]}``, a zero weight where a grid does not edit a site.
    Each grid is ``{site: weights [N_i, L, ...]}`` (its sites patched together)."""
    shapes = {site: tuple(w.shape[1:]) for g in grids for site, w in g.items()}
    sizes = [next(iter(g.values())).shape[0] for g in grids]
    xp = _namespace(*(w for g in grids for w in g.values()))
    return {site: xp.concatenate([g[site] if site in g else xp.zeros((n,) + shape, xp.float32)
                                  for g, n in zip(grids, sizes)]) for site, shape in shapes.items()}


def weighted_mask(weights, local):
    """One edit weight from a scalar per component: ``weights`` [L, P] and ``local`` [P, ...]
    -> ``sum_p weights[l, p] * local[p]`` [L, ...] (attribution patching differentiates it)."""
    return jnp.tensordot(weights, local, axes=([1], [0]))
