"""How well single SAE latents separate two classes of clips, against a linear probe.

Inputs are clip-level features ``x [n, d]`` (a latent's mean activation over the clip's audio
frames, :func:`.inspect.clip_means`) and binary labels ``y [n]``.

* :func:`auroc`: every column's AUROC for ``y == 1`` (Mann-Whitney, ties counted half), in one
  rank computation. 0.5 is chance; a latent that fires on the negative class is below 0.5.
* :func:`best_thresholds`: every column's best single-threshold rule, ``x > t`` or ``x <= t``
  predicting class 1, over the thresholds between distinct values (and +-inf), by
  cumulative counts over the sorted column: ``(accuracy, threshold, sign)`` each ``[d]``.
* :func:`cv_single_latent`: the cross-validated best single latent: on each training fold the
  latent *and* its threshold and sign are chosen by training accuracy, then scored on the held-
  out fold. The folds are :func:`..probes.sweep.stratified_folds` of the same seeds as the
  probe sweep, so the single latent and the probe are tested on the same splits. Per item, the
  fraction of seeds in which it was classified correctly ``[n]`` (its mean is the accuracy,
  and the items are what the bootstrap resamples) and the latents chosen.
* :func:`cv_single_latent_multiclass`: the same for ``C`` classes ``y in 0..C-1``, with a
  one-latent nearest-class-mean rule (each class's mean of the latent on the training folds;
  an item gets the class whose mean is nearest its value; ties: the lower class), the latent
  chosen by training accuracy.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from jaxasr_interp.probes.sweep import stratified_folds


def auroc(x, y) -> np.ndarray:
    """``[d]`` AUROC of each column of ``x [n, d]`` for the positives ``y == 1``."""
    x, y = np.asarray(x, np.float64), np.asarray(y) == 1
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both classes")
    ranks = rankdata(x, axis=0)  # average ranks: ties count half
    return (ranks[y].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def best_thresholds(x, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(accuracy, threshold, sign)`` ``[d]``: per column the rule ``sign * (x - t) > 0`` ->
    class 1 with the best accuracy on ``(x, y)`` (ties: the first column order's first split)."""
    x, y = np.asarray(x, np.float64), np.asarray(y) == 1
    n, d = x.shape
    order = np.argsort(x, axis=0, kind="stable")
    xs, ys = np.take_along_axis(x, order, axis=0), y[order]
    zeros = np.zeros((1, d))
    below1 = np.concatenate([zeros, np.cumsum(ys, axis=0)])           # [n + 1, d] positives at or below split i
    below0 = np.concatenate([zeros, np.cumsum(~ys, axis=0)])
    acc_up = (below0 + (y.sum() - below1)) / n                       # x > t -> 1
    valid = np.ones((n + 1, d), bool)
    valid[1:n] = xs[1:] > xs[:-1]                                    # only between distinct values
    acc = np.where(valid, np.maximum(acc_up, 1 - acc_up), -1.0)
    split = np.argmax(acc, axis=0)
    cols = np.arange(d)
    lo = np.where(split > 0, xs[np.maximum(split - 1, 0), cols], -np.inf)
    hi = np.where(split < n, xs[np.minimum(split, n - 1), cols], np.inf)
    thr = np.where(split == 0, -np.inf, np.where(split == n, np.inf, (lo + hi) / 2))
    sign = np.where(acc_up[split, cols] >= 1 - acc_up[split, cols], 1.0, -1.0)
    return acc[split, cols], thr, sign


def predict(x, threshold, sign) -> np.ndarray:
    x = np.asarray(x, np.float64)
    up = x > threshold
    return np.where(sign > 0, up, ~up).astype(np.int32)


def cv_single_latent(x, y, *, k: int = 5, seeds=(0, 1, 2)) -> tuple[np.ndarray, list[int]]:
    """``(correct [n], chosen latents)``: cross-validated best single latent (module docstring)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.int32)
    correct, chosen = np.zeros(len(y)), []
    for seed in seeds:
        folds = stratified_folds(y, k, seed)
        for f in range(k):
            train, test = folds != f, folds == f
            acc, thr, sign = best_thresholds(x[train], y[train])
            j = int(np.argmax(acc))
            chosen.append(j)
            correct[test] += predict(x[test, j], thr[j], sign[j]) == y[test]
    return correct / len(seeds), chosen


def nearest_mean_rule(x, y, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(accuracy [d], class means [C, d])`` of every column's one-latent nearest-class-mean
    rule on ``(x, y)`` (a class absent from ``y`` gets mean +inf: never predicted)."""
    x, y = np.asarray(x, np.float64), np.asarray(y)
    means = np.stack([x[y == c].mean(0) if (y == c).any() else np.full(x.shape[1], np.inf)
                      for c in range(n_classes)])
    pred = np.argmin(np.abs(x[:, None, :] - means[None]), axis=1)  # [n, d]
    return (pred == y[:, None]).mean(0), means


def cv_single_latent_multiclass(x, y, *, k: int = 5, seeds=(0, 1, 2)) -> tuple[np.ndarray, list[int]]:
    """``(correct [n], chosen latents)``: the cross-validated one-latent nearest-class-mean rule
    (module docstring), on the folds of :func:`cv_single_latent`."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.int32)
    n_classes = int(y.max()) + 1
    correct, chosen = np.zeros(len(y)), []
    for seed in seeds:
        folds = stratified_folds(y, k, seed)
        for f in range(k):
            train, test = folds != f, folds == f
            acc, means = nearest_mean_rule(x[train], y[train], n_classes)
            j = int(np.argmax(acc))
            chosen.append(j)
            pred = np.argmin(np.abs(x[test, j][:, None] - means[None, :, j]), axis=1)
            correct[test] += pred == y[test]
    return correct / len(seeds), chosen
