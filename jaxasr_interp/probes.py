"""Linear probes at sweep scale: one jitted program for every layer, target, fold, seed and
regularisation strength.

Contract
--------
``probe_sweep(features, labels, ...)`` takes

* ``features``: float32 ``[L, n, d]`` (one row of features per layer and item; for Whisper the
  encoder and decoder layers are concatenated on the first axis, see :mod:`.features`);
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

The program is ``vmap`` over layers x targets x seeds x folds x strengths of a single-probe
trainer, under one ``jit``. The features are never copied per probe: standardisation is folded
into the weights (``(x - mu) / sd @ w == x @ (w / sd) - mu / sd @ w``), so every probe of a
layer shares one ``[n, d] @ [d, probes * classes]`` matrix product. Training is a fixed number
of full-batch Adam steps (optax, cosine-decayed step size) from zero weights, so results are
bit-identical for a fixed seed. Folds and permutations are drawn with numpy from the seed, outside the trace.

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
import optax

from .sharding import padded_size, shard_leading

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


def _fit_one(x, y, train, class_ok, l2, *, steps, lr):
    """One probe: x [n, d] (shared by every probe of a layer), y [n], train [n] bool,
    class_ok [C] (C == 1: binary with one logit) -> predicted class of every item [n]."""
    w_train = train.astype(x.dtype)
    n_train = w_train.sum()
    mu = w_train @ x / n_train
    sd = jnp.sqrt(jnp.maximum(w_train @ jnp.square(x) / n_train - jnp.square(mu), 0.0))
    # Constant features get weight 0 through inv_sd = 0: standardised they are 0 anyway.
    inv_sd = jnp.where(sd > 1e-6 * (1.0 + jnp.abs(mu)), 1.0 / jnp.maximum(sd, 1e-30), 0.0)
    binary = class_ok.shape[0] == 1
    # A binary target inside a softmax sweep: two columns share the penalty of one weight
    # vector, so doubling it keeps the objective equal to scikit-learn's binary one.
    penalty = l2 if binary else l2 * jnp.where(class_ok.sum() == 2, 2.0, 1.0)

    def logits_of(params):
        w, b = params
        z = x @ (w * inv_sd[:, None]) + (b - (mu * inv_sd) @ w)
        return z if binary else jnp.where(class_ok, z, -1e9)  # absent classes never win

    def loss(params):
        z = logits_of(params)
        if binary:
            nll = optax.sigmoid_binary_cross_entropy(z[:, 0], y.astype(x.dtype))
        else:
            nll = optax.softmax_cross_entropy_with_integer_labels(z, y)
        return (w_train * nll).sum() / n_train + 0.5 * penalty * jnp.sum(jnp.square(params[0]))

    # Adam on a cosine schedule for a fixed number of full-batch steps: no data-dependent
    # control flow, so the vmapped program is a plain loop of matrix products (L-BFGS with a
    # line search was 30x slower per step under vmap) and results are bit-reproducible.
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))
    params = (jnp.zeros((x.shape[1], class_ok.shape[0]), x.dtype), jnp.zeros(class_ok.shape, x.dtype))

    def step(carry, _):
        params, state = carry
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    z = logits_of(params)
    return (z[:, 0] > 0).astype(jnp.int32) if binary else jnp.argmax(z, axis=-1)


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


@functools.partial(jax.jit, static_argnames=("k", "steps", "lr"))
def _sweep(features, ys, folds, class_ok, l2, *, k, steps, lr):
    """features [L, n, d]; ys, folds [T2, S, n]; class_ok [T2, C]; l2 [R] -> scores [L, T2, S, R]."""
    fit = functools.partial(_fit_one, steps=steps, lr=lr)
    fit = jax.vmap(fit, in_axes=(None, None, None, None, 0))          # strengths
    fit = jax.vmap(fit, in_axes=(None, None, 0, None, None))          # folds
    fit = jax.vmap(fit, in_axes=(None, 0, 0, None, None))             # seeds
    fit = jax.vmap(fit, in_axes=(None, 0, 0, 0, None))                # targets (+ controls)
    fit = jax.vmap(fit, in_axes=(0, None, None, None, None))          # layers
    train = folds[:, :, None, :] != jnp.arange(k)[None, None, :, None]  # [T2, S, K, n]
    pred = fit(features, ys, train, class_ok, l2)                      # [L, T2, S, K, R, n]
    score = functools.partial(_scores, n_classes=max(class_ok.shape[1], 2))
    score = jax.vmap(score, in_axes=(1, None, None))                  # strengths
    score = jax.vmap(score, in_axes=(0, 0, 0))                        # seeds
    score = jax.vmap(score, in_axes=(0, 0, 0))                        # targets
    score = jax.vmap(score, in_axes=(0, None, None))                  # layers
    acc, bal = score(pred, ys, train)                                  # [L, T2, S, R]
    return acc, bal


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


def probe_sweep(features, labels, *, k: int = 5, seeds=(0,), l2=DEFAULT_L2, steps: int = 150,
                lr: float = 0.05, control: bool = True) -> ProbeResult:
    """Train and score every probe of the sweep in one compiled program (module docstring).
    ``control=False`` skips the shuffled-label probes (their scores are then NaN)."""
    features = jnp.asarray(features, jnp.float32)
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
    padded = jnp.concatenate([features, features[:1].repeat(padded_size(n_layers) - n_layers, 0)])
    acc, bal = _sweep(shard_leading(padded), jnp.asarray(ys), jnp.asarray(folds), jnp.asarray(class_ok),
                      jnp.asarray(l2, jnp.float32), k=k, steps=int(steps), lr=float(lr))
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
