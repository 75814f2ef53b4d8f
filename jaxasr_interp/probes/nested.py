"""Nested cross-validation of linear probes, with per-item correctness for bootstrap intervals.

``nested_cv(features [L, n, d], labels [n], groups=None, ...)`` -> :class:`NestedResult`.

* Outer folds give the estimate: every item is tested once, by a probe trained on the other
  outer folds. ``outer`` may be given (e.g. one fold per engine or speaker: held-out-group
  generalisation); items whose outer fold is -1 are always training items, never tested.
* The L2 strength (per layer) and the best layer (over all layers and strengths) are chosen
  on inner folds of each outer training split only; the outer test items never take part in
  the choice, so the outer accuracy is an unbiased estimate of the chosen probe's.
* Folds are stratified and group-aware: with ``groups`` (a sentence, speaker or engine id per
  item) all items of one group fall in one fold, so a group is never on both sides.
* The control task is the same probe on a **shuffled labelling** (labels permuted with the
  seed, class counts kept) through the same nested procedure; selectivity = accuracy - control
  accuracy (Hewitt & Liang 2019 use a random function of word type; with one sentence per
  item that function is a shuffle).

Every probe of a call (outer x inner folds x strengths x labellings, per layer) is trained in
one jitted program by :func:`.logistic.fit_probe` (the solver of :func:`.sweep.probe_sweep`);
:meth:`NestedResult.correct` arrays are per item, so :func:`jaxasr_interp.core.stats` bootstraps
them over items.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import matmul_precision
from jaxasr_interp.probes.logistic import fit_probe
from jaxasr_interp.probes.sweep import DEFAULT_L2, stratified_folds


def group_folds(labels, groups, k: int, seed: int) -> np.ndarray:
    """Fold ``[n]`` of each item; every group in one fold. Groups are stratified by their
    majority label, shuffled with ``seed`` and dealt round robin; when some class has fewer
    than ``k`` groups, shuffled groups go to the emptiest fold instead (unstratified).
    ``groups=None``: one group per item (:func:`.sweep.stratified_folds`)."""
    labels = np.asarray(labels)
    if groups is None:
        return stratified_folds(labels, k, seed)
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    major = np.asarray([np.bincount(labels[inverse == g]).argmax() for g in range(len(names))])
    per_class = np.bincount(major)
    if len(names) < k:
        raise ValueError(f"group-aware {k}-fold needs at least {k} groups, got {len(names)}")
    rng, fold_of_group, start = np.random.default_rng(seed), np.empty(len(names), np.int32), 0
    if per_class[per_class > 0].min() < k:  # cannot stratify: balance fold sizes, groups shuffled
        sizes, load = np.bincount(inverse), np.zeros(k)
        for g in rng.permutation(len(names)):
            fold_of_group[g] = int(load.argmin())
            load[fold_of_group[g]] += sizes[g]
        return fold_of_group[inverse]
    for c in np.flatnonzero(per_class):
        idx = rng.permutation(np.flatnonzero(major == c))
        fold_of_group[idx] = (np.arange(idx.size) + start) % k
        start += idx.size
    return fold_of_group[inverse]


@functools.partial(jax.jit, static_argnames=("max_iter", "tol"))
def _predict(features, features_t, ys, train, class_ok, l2, *, max_iter, tol):
    """features [L, n, d], ys/train [P, n], l2 [P] -> predictions [L, P, n]."""
    with matmul_precision("highest"):
        fit = functools.partial(fit_probe, max_iter=max_iter, tol=tol)
        fit = jax.vmap(fit, in_axes=(None, None, 0, 0, None, 0))
        return jax.vmap(fit, in_axes=(0, 0, None, None, None, None))(features, features_t, ys, train, class_ok, l2)


def _plan(labels, groups, outer, inner_k, seed):
    """Train masks ``[P, n]`` and the item sets they are scored on: inner probes (o, j) then
    outer probes (o); returns (train, test, n_outer)."""
    folds = np.unique(outer[outer >= 0])
    train, test = [], []
    for o in folds:
        tr = np.flatnonzero(outer != o)
        inner = group_folds(labels[tr], None if groups is None else groups[tr], inner_k, seed + 1 + int(o))
        for j in range(inner_k):
            train.append(np.isin(np.arange(len(labels)), tr[inner != j]))
            test.append(np.isin(np.arange(len(labels)), tr[inner == j]))
    for o in folds:
        train.append(outer != o)
        test.append(outer == o)
    return np.asarray(train), np.asarray(test), folds


@dataclasses.dataclass(frozen=True)
class NestedResult:
    """``correct [L, n]`` (bool; items with outer fold -1 are False and excluded by ``tested``):
    each layer's probe, L2 chosen on inner folds; ``best_correct [n]``: layer and L2 chosen on
    inner folds; ``control_*`` the same on the shuffled labelling. ``best_layer [folds]`` and
    ``l2_chosen [L, folds]``: the choices; ``test_selected [L]``: accuracy when L2 is chosen on
    the outer test folds (the biased procedure, for comparison)."""

    correct: np.ndarray
    best_correct: np.ndarray
    control_correct: np.ndarray
    control_best_correct: np.ndarray
    tested: np.ndarray
    best_layer: np.ndarray
    l2_chosen: np.ndarray
    test_selected: np.ndarray
    test_selected_best: float
    majority: float


def _select(pred, y, train, test, folds, inner_k, l2):
    """pred [L, P_all, n] for one labelling -> (correct [L, n], best_correct [n], best_layer,
    l2 index [L, O], test-selected accuracy [L], test-selected best)."""
    n_l, r, n_o = pred.shape[0], len(l2), len(folds)
    hit = pred == y[None, None, :]
    split = n_o * inner_k * r
    inner = (hit[:, :split] & test[None, :split]).sum(-1).reshape(n_l, n_o, inner_k, r).sum(2)  # [L, O, R]
    outer_hit = hit[:, split:].reshape(n_l, n_o, r, -1)
    outer_test = test[split:].reshape(n_o, r, -1)[:, 0]  # [O, n]
    pick = inner.argmax(-1)  # [L, O], ties: the smallest strength
    correct = np.zeros((n_l, hit.shape[-1]), bool)
    best = np.zeros(hit.shape[-1], bool)
    best_layer = np.zeros(n_o, int)
    for o in range(n_o):
        rows = outer_test[o]
        for layer in range(n_l):
            correct[layer, rows] = outer_hit[layer, o, pick[layer, o], rows]
        flat = int(inner[:, o].reshape(-1).argmax())  # ties: the earliest layer
        best_layer[o], rb = divmod(flat, r)
        best[rows] = outer_hit[best_layer[o], o, rb, rows]
    pooled = (outer_hit * outer_test[None, :, None]).sum((1, 3)) / outer_test.sum()  # [L, R]
    return correct, best, best_layer, pick, pooled.max(-1), float(pooled.max())


def nested_cv(features, labels, *, groups=None, outer=None, k: int = 5, inner_k: int = 4, l2=DEFAULT_L2,
              seed: int = 0, control: bool = True, max_iter: int = 100, tol: float = 1e-4) -> NestedResult:
    """Nested cross-validation (module docstring). ``labels`` [n] class indices."""
    features = jnp.asarray(features, jnp.float32)
    labels = np.asarray(labels).astype(np.int32)
    groups = None if groups is None else np.asarray(groups)
    if outer is None:
        outer = group_folds(labels, groups, k, seed)
    outer = np.asarray(outer)
    l2 = tuple(float(v) for v in l2)
    train, test, folds = _plan(labels, groups, outer, inner_k, seed)
    p = len(train)
    train, test = np.repeat(train, len(l2), 0), np.repeat(test, len(l2), 0)
    strengths = np.tile(np.asarray(l2, np.float32), p)
    ys = [labels] + ([np.random.default_rng([seed, 7]).permutation(labels)] if control else [])
    n_classes = max(int(labels.max()) + 1, 2)
    class_ok = jnp.ones((1 if n_classes == 2 else n_classes,), bool)
    xt = jnp.swapaxes(features, 1, 2)
    out = []
    for y in ys:
        pred = np.asarray(_predict(features, xt, jnp.asarray(np.broadcast_to(y, train.shape)), jnp.asarray(train),
                                   class_ok, jnp.asarray(strengths), max_iter=max_iter, tol=float(tol)))
        out.append(_select(pred, y, train, test, folds, inner_k, l2))
    if not control:
        out.append(tuple(np.zeros_like(a) if isinstance(a, np.ndarray) else float("nan") for a in out[0]))
    (correct, best, best_layer, pick, ts, tsb), (c_correct, c_best, *_) = out
    tested = outer >= 0
    majority = float(np.bincount(labels[tested]).max() / tested.sum())
    return NestedResult(correct, best, c_correct, c_best, tested, best_layer,
                        np.asarray(l2)[pick], ts, tsb, majority)
