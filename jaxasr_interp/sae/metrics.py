"""Quality of SAEs on held-out activations: fraction of variance unexplained, L0, dead and
dense latents.

``evaluate(saes, batches)`` streams batches ``[L, B, d_in]`` (an
:class:`~.store.ActivationStore`'s, ``layers`` naming their layer axis) once and, for each SAE
(a :class:`~.train.TrainedSAE` or a ``(params, config)`` pair; it reads ``config.layer``),
accumulates in float64:

* ``fvu``: sum of squared reconstruction errors over the total variance of the inputs about
  their mean (over all rows seen): ``1 - R^2``;
* ``l0``: mean number of non-zero latents per row (inference encoding: BatchTopK through its
  threshold);
* ``dead``: fraction of latents that never fire on these rows; ``dense``: fraction that fire
  on more than ``dense_threshold`` (10%) of them;
* ``freq``: each latent's firing frequency ``[d_sae]``.

The downstream cost (splicing the reconstruction back into the model) is in :mod:`.splice`.
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.sae import model as M


def as_pair(sae) -> tuple[dict, M.SAEConfig]:
    """``(params, config)`` of a :class:`~.train.TrainedSAE` or of a pair."""
    if hasattr(sae, "params") and hasattr(sae, "config"):
        return sae.params, sae.config
    params, cfg = sae
    return params, cfg


@functools.partial(jax.jit, static_argnames=("cfg",))
def _batch_stats(params, x, *, cfg):
    x = x.astype(jnp.float32)
    z = M.encode(params, x, cfg)
    on = z > 0
    err = M.decode(params, z) - x
    return dict(sse=jnp.sum(err ** 2), sum_x=x.sum(0), sum_x2=(x ** 2).sum(0), l0=on.sum(),
                fires=on.sum(0))


def evaluate(saes: Sequence, batches: Iterable, *, layers: Sequence[int] | None = None,
             dense_threshold: float = 0.1) -> list[dict]:
    """One dict per SAE (module docstring): ``fvu``, ``l0``, ``dead``, ``dense``, ``freq``,
    ``n_rows``."""
    pairs = [as_pair(s) for s in saes]
    totals: list[dict | None] = [None] * len(pairs)
    n = 0
    for batch in batches:
        batch = np.asarray(batch)
        rows = list(range(batch.shape[0])) if layers is None else list(layers)
        for i, (params, cfg) in enumerate(pairs):
            stats = jax.device_get(_batch_stats(params, batch[rows.index(cfg.layer)], cfg=cfg))
            stats = {k: np.asarray(v, np.float64) for k, v in stats.items()}
            totals[i] = stats if totals[i] is None else {k: totals[i][k] + v for k, v in stats.items()}
        n += batch.shape[1]
    if not n:
        raise ValueError("no batches to evaluate on")
    out = []
    for t in totals:
        variance = np.sum(t["sum_x2"] - t["sum_x"] ** 2 / n)
        freq = t["fires"] / n
        out.append(dict(fvu=float(t["sse"] / max(variance, 1e-30)), l0=float(t["l0"] / n),
                        dead=float(np.mean(freq == 0)), dense=float(np.mean(freq > dense_threshold)),
                        freq=freq, n_rows=n))
    return out
