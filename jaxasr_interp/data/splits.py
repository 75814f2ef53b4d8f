"""Held-out-group splits: train on every engine (or speaker) but one, test on that one.

``group_splits(groups)`` yields ``(group, train_idx, test_idx)`` for each distinct value of
``groups`` (an ``engine`` or ``speaker`` column), in sorted order; every item is in exactly
one test set. ``cross_engine_splits(groups, labels)`` keeps the folds a classifier can be
scored on: the train side restricted to the classes the test side has, and both sides with
at least two of them (a held-out engine whose voices are all one gender measures nothing).
Pure numpy; the indices are sorted int arrays into the dataset's rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def group_splits(groups) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """``(group, train_idx, test_idx)`` for each distinct group, test = that group's items."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.size == 0:
        raise ValueError(f"groups must be a non-empty 1-D sequence, got shape {groups.shape}")
    names = np.unique(groups)
    if names.size < 2:
        raise ValueError(f"a held-out split needs at least two groups, got only {names.tolist()}")
    for name in names:
        test = groups == name
        yield str(name), np.flatnonzero(~test), np.flatnonzero(test)


def cross_engine_splits(groups, labels, *, min_classes: int = 2) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """The scorable folds of :func:`group_splits` (module docstring); the train side keeps
    only the classes of the test side."""
    labels = np.asarray(labels)
    if labels.shape != np.shape(groups):
        raise ValueError(f"labels {labels.shape} and groups {np.shape(groups)} differ in length")
    for name, train, test in group_splits(groups):
        shared = np.intersect1d(labels[train], labels[test])
        if shared.size < min_classes:
            continue
        yield name, train[np.isin(labels[train], shared)], test[np.isin(labels[test], shared)]
