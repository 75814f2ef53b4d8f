"""Linear probes at sweep scale: one jitted program for every layer, target, fold, seed and
regularisation strength.

Contract
--------
``probe_sweep(features, labels, ...)`` takes

* ``features``: float32 or bfloat16 ``[L, n, d]`` (one row of features per layer and item; for
  Whisper the encoder and decoder layers are concatenated on the first axis, see
  :mod:`.features`);
* ``labels``: int ``[T, n]``, one row per target, classes ``0 .. n_classes - 1``;

and trains L2-regularised softmax regression (logistic regression for two classes) on
standardised features, with stratified ``k``-fold cross-validation repeated for every seed and
every strength in ``l2``. A shuffled-label control (each target's labels permuted with the
seed) is trained alongside, in the same program. The objective of one probe is

    mean cross-entropy over the training fold + l2 / 2 * sum_k ||w_k||^2   (bias unpenalised)

on features standardised with the training fold's mean and standard deviation: scikit-learn's
``LogisticRegression(C=1 / (l2 * n_train))`` (binary, or multinomial for more classes). When
every target is binary a probe has one logit; in a sweep that mixes binary and multi-class
targets, a binary target's two softmax columns get twice the strength, which is the same
objective.

The program is ``vmap`` over layers x (targets x seeds x folds x strengths, one flattened
probe axis) of a single-probe trainer, under one ``jit``. The features are never copied per
probe: standardisation is folded into the weights (``(x - mu) / sd @ w == x @ (w / sd) - mu /
sd @ w``), so every probe of a layer shares one ``[n, d] @ [d, probes * classes]`` matrix
product. Training is full-batch L-BFGS (:mod:`.logistic`, :mod:`.solver`) from zero weights with an exact line
search in logit space, two matrix products an iteration, until the largest gradient entry is
at most ``tol`` (scikit-learn's own stopping rule and default, 1e-4) for every probe or
``max_iter`` iterations have run; there is no randomness in it, so results are bit-identical
for a fixed seed. Folds and permutations are drawn with numpy from the seed, outside the trace.

``dtype`` is the dtype of the features inside the sweep: float32 (the default; bfloat16
features are widened, exactly) or bfloat16 (half the memory; each matrix product with the
features rounds its other operand to bfloat16 and accumulates in float32). The solve itself
(parameters, gradients, L-BFGS memory, line search) is float32 either way. ``precision`` is the
matmul precision (None, the default: JAX's configured default, as before it was an argument).

Returns a :class:`ProbeResult` with ``accuracy``, ``balanced_accuracy`` and the same for the
control, each ``[L, T, S, R]`` (pooled over the ``k`` test folds), and ``summary()`` rows per
layer and target at the strength with the best mean cross-validated accuracy.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import as_dtype, as_precision, matmul_precision
from jaxasr_interp.probes.logistic import fit_probe
from jaxasr_interp.core.sharding import padded_size, shard_leading

DEFAULT_L2 = (1e-3, 1e-2, 1e-1)


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold index ``[n]`` of each item: each class is shuffled with ``seed`` and dealt round
    robin, so every fold holds ``count / k`` (+-1) items of every class."""
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if present.min() < k:
        raise ValueError(f"stratified {k}-fold needs at least {k} items of every class; "
                         f"class counts are {counts.tolist()}")
    rng = np.random.default_rng(seed)
    fold = np.empty(labels.shape[0], np.int32)
    start = 0
    for c in np.flatnonzero(counts):
        idx = rng.permutation(np.flatnonzero(labels == c))
        # Offset the round robin per class so fold sizes stay balanced overall.
        fold[idx] = (np.arange(idx.size) + start) % k
        start += idx.size
    return fold


def _check(features, labels, k, l2):
    if features.ndim != 3:
        raise ValueError(f"features must be [layers, items, dims], got shape {features.shape}")
    if labels.ndim != 2 or labels.shape[1] != features.shape[1]:
        raise ValueError(f"labels must be [targets, items={features.shape[1]}], got shape {labels.shape}")
    if labels.min() < 0:
        raise ValueError("labels must be class indices >= 0")
    if k < 2:
        raise ValueError(f"k must be at least 2 folds, got {k}")
    if not l2 or min(l2) <= 0:
        raise ValueError(f"l2 strengths must be positive, got {l2}")
    for t, row in enumerate(labels):
        if np.unique(row).size < 2:
            raise ValueError(f"target {t} has a single class; a probe needs at least two")


def _split_arrays(labels: np.ndarray, k: int, seeds, control: bool) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``[2T, S, n]`` (real targets, then their shuffled controls; ``[T, S, n]`` without
    controls) and fold indices of the same shape; a control is stratified on its own labels."""
    ys, folds = [], []
    for control in (False, True)[: 1 + control]:
        for t, row in enumerate(labels):
            ys_t, folds_t = [], []
            for seed in seeds:
                # A distinct stream per (target, seed) so controls are independent across targets.
                y = np.random.default_rng([seed, t, 1]).permutation(row) if control else row
                ys_t.append(y)
                folds_t.append(stratified_folds(y, k, seed))
            ys.append(ys_t)
            folds.append(folds_t)
    return np.asarray(ys, np.int32), np.asarray(folds, np.int32)


def _scores(pred, y, train, n_classes):
    """Pooled test accuracy and balanced accuracy of one (fold-stacked) probe set.

    pred [K, n], y [n], train [K, n]: each item is tested in exactly one fold."""
    test = ~train
    correct = (pred == y[None, :]) & test
    accuracy = correct.sum() / test.sum()
    onehot = jax.nn.one_hot(y, n_classes, dtype=jnp.float32)
    per_class_hits = (correct.astype(jnp.float32) @ onehot).sum(0)
    per_class_n = (test.astype(jnp.float32) @ onehot).sum(0)
    recall = jnp.where(per_class_n > 0, per_class_hits / jnp.maximum(per_class_n, 1.0), 0.0)
    balanced = recall.sum() / jnp.maximum((per_class_n > 0).sum(), 1)
    return accuracy, balanced


@functools.partial(jax.jit, static_argnames=("k", "max_iter", "tol", "precision"))
def _sweep(features, features_t, ys, folds, class_ok, l2, *, k, max_iter, tol, precision):
    """features [L, n, d] and features_t [L, d, n]; ys, folds [T2, S, n]; class_ok [T2, C];
    l2 [R] -> scores [L, T2, S, R], the matrix products at ``precision``."""
    with matmul_precision(precision):
        return _sweep_scores(features, features_t, ys, folds, class_ok, l2, k=k, max_iter=max_iter, tol=tol)


def _sweep_scores(features, features_t, ys, folds, class_ok, l2, *, k, max_iter, tol):
    # Every (target, seed, fold, strength) of a layer is one probe of a single vmapped axis
    # (their product, flattened): the batched program is the same as nesting one vmap per
    # axis, and tracing it is ~3x faster.
    t2, s, n = ys.shape
    r = l2.shape[0]
    train = folds[:, :, None, :] != jnp.arange(k)[None, None, :, None]  # [T2, S, K, n]

    def per_probe(a):  # [T2|1, S|1, K|1, R|1, ...] -> [T2 * S * K * R, ...]
        return jnp.broadcast_to(a, (t2, s, k, r) + a.shape[4:]).reshape((-1,) + a.shape[4:])

    probe_y = per_probe(ys[:, :, None, None, :])
    probe_train = per_probe(train[:, :, :, None, :])
    probe_ok = per_probe(class_ok[:, None, None, None, :])
    probe_l2 = per_probe(l2[None, None, None, :])
    fit = functools.partial(fit_probe, max_iter=max_iter, tol=tol)
    fit = jax.vmap(fit, in_axes=(None, None, 0, 0, 0, 0))                    # probes
    fit = jax.vmap(fit, in_axes=(0, 0, None, None, None, None))              # layers
    pred = fit(features, features_t, probe_y, probe_train, probe_ok, probe_l2)
    pred = pred.reshape(features.shape[0], t2, s, k, r, n)             # [L, T2, S, K, R, n]
    score = functools.partial(_scores, n_classes=max(class_ok.shape[1], 2))
    score = jax.vmap(score, in_axes=(1, None, None))                  # strengths
    score = jax.vmap(score, in_axes=(0, 0, 0))                        # seeds
    score = jax.vmap(score, in_axes=(0, 0, 0))                        # targets
    score = jax.vmap(score, in_axes=(0, None, None))                  # layers
    acc, bal = score(pred, ys, train)                                  # [L, T2, S, R]
    return acc, bal


_transposed = jax.jit(lambda a: jnp.swapaxes(a, 1, 2))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Cross-validated scores, each ``[L, T, S, R]`` (layers, targets, seeds, strengths)."""

    accuracy: np.ndarray
    balanced_accuracy: np.ndarray
    control_accuracy: np.ndarray
    control_balanced_accuracy: np.ndarray
    l2: tuple
    n_classes: tuple
    class_counts: tuple

    def summary(self) -> list[dict]:
        """One row per (target, layer) at the strength with the best seed-mean accuracy of that
        layer and target (chosen on the same folds, so slightly optimistic; the control is
        chosen the same way, which bounds the optimism)."""
        rows = []
        mean = lambda a: a.mean(axis=2)  # over seeds -> [L, T, R]
        acc, bal = mean(self.accuracy), mean(self.balanced_accuracy)
        cacc, cbal = mean(self.control_accuracy), mean(self.control_balanced_accuracy)
        for t in range(acc.shape[1]):
            chance = max(self.class_counts[t]) / sum(self.class_counts[t])
            for layer in range(acc.shape[0]):
                r, rc = int(np.argmax(acc[layer, t])), int(np.argmax(cacc[layer, t]))
                rows.append(dict(target=t, layer=layer, l2=self.l2[r], accuracy=float(acc[layer, t, r]),
                                 balanced_accuracy=float(bal[layer, t, r]),
                                 control_accuracy=float(cacc[layer, t, rc]),
                                 control_balanced_accuracy=float(cbal[layer, t, rc]),
                                 chance=float(chance)))
        return rows


def probe_sweep(features, labels, *, k: int = 5, seeds=(0,), l2=DEFAULT_L2, max_iter: int = 100,
                tol: float = 1e-4, control: bool = True, dtype=jnp.float32,
                precision: str | None = None) -> ProbeResult:
    """Train and score every probe of the sweep in one compiled program (module docstring).
    ``control=False`` skips the shuffled-label probes (their scores are then NaN). ``dtype``
    (None: float32) and ``precision``: the features' dtype in the matrix products and their
    precision (module docstring)."""
    precision = as_precision(precision)
    features = jnp.asarray(features, as_dtype(dtype) or jnp.float32)
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[None]
    l2 = tuple(float(v) for v in np.atleast_1d(l2))
    seeds = tuple(int(s) for s in np.atleast_1d(seeds))
    _check(features, labels, k, l2)
    labels = labels.astype(np.int32)
    n_classes = int(labels.max()) + 1
    ys, folds = _split_arrays(labels, k, seeds, control)
    class_ok = np.stack([np.bincount(row[0], minlength=n_classes) > 0 for row in ys])
    if n_classes == 2:  # every target binary: one logit per probe halves the matrix products
        class_ok = class_ok[:, :1]
    n_layers = features.shape[0]
    # the layer axis is sharded over all devices (padded with copies to a multiple of their count)
    extra = padded_size(n_layers) - n_layers
    padded = jnp.concatenate([features, features[:1].repeat(extra, 0)]) if extra else features
    padded = shard_leading(padded)
    # A transposed copy, made by its own small program (inside the sweep XLA made it twice):
    # the gradient's xt @ r runs ~3x faster on CPU than x^T r, which contracts x's leading axis.
    acc, bal = _sweep(padded, _transposed(padded), jnp.asarray(ys), jnp.asarray(folds), jnp.asarray(class_ok),
                      jnp.asarray(l2, jnp.float32), k=k, max_iter=int(max_iter), tol=float(tol),
                      precision=precision)
    acc, bal = np.asarray(acc)[:n_layers], np.asarray(bal)[:n_layers]
    t = labels.shape[0]
    if not control:
        acc, bal = (np.concatenate([a, np.full_like(a, np.nan)], axis=1) for a in (acc, bal))
    counts = tuple(tuple(int(c) for c in np.bincount(row) if c) for row in labels)
    return ProbeResult(acc[:, :t], bal[:, :t], acc[:, t:], bal[:, t:], l2,
                       tuple(len(c) for c in counts), counts)


def planted_features(labels, n_layers: int, dim: int, *, layers, strength: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """Synthetic float32 features ``[n_layers, n, dim]``: Gaussian noise everywhere, plus, in
    each layer of ``layers``, a class-dependent mean along one random direction per class
    (``strength`` standard deviations apart). For tests and benchmarks of the probes."""
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 1 else labels
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_layers, labels.shape[1], dim), dtype=np.float32)
    for layer in np.atleast_1d(layers):
        for row in labels:
            directions = rng.standard_normal((int(row.max()) + 1, dim)).astype(np.float32)
            directions /= np.linalg.norm(directions, axis=1, keepdims=True)
            x[layer] += strength * directions[row]
    return x
