"""Synthetic activations with planted sparse features: what an SAE should recover.

``planted_activations(n, d, n_features, active)`` -> ``(x [layers, n, d], directions
[n_features, d])``: each row is a sum of about ``active`` unit directions (each feature on
with probability ``active / n_features``, magnitude uniform in [0.5, 2)), plus a constant offset
(so ``b_dec`` has something to find) and Gaussian noise. Used by the tests and the benchmark.
"""

from __future__ import annotations

import numpy as np


def planted_activations(n: int, d: int, n_features: int, active: float, *, layers: int = 1,
                        noise: float = 0.01, offset: float = 1.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n_features, d))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    on = rng.random((layers, n, n_features)) < active / n_features
    x = (on * rng.uniform(0.5, 2.0, on.shape)) @ directions
    x += offset + noise * rng.standard_normal(x.shape)
    return x.astype(np.float32), directions.astype(np.float32)


def batches(x, batch_size: int, *, epochs: int | None = None, seed: int = 0):
    """Batches ``[layers, batch_size, d]`` of in-memory ``x [layers, n, d]``, rows reshuffled
    every epoch (None: forever)."""
    rng, epoch = np.random.default_rng(seed), 0
    while epochs is None or epoch < epochs:
        order = rng.permutation(x.shape[1])
        for start in range(0, x.shape[1] - batch_size + 1, batch_size):
            yield x[:, order[start:start + batch_size]]
        epoch += 1
