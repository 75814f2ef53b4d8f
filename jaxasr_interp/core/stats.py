"""Percentile bootstrap intervals over items.

Every reported number is a statistic of per-item values (one row per utterance, clip, ...);
its 95% interval comes from resampling the items with replacement:

- :func:`bootstrap_ci` ``(values, stat)`` -> ``(point, lo, hi)``: ``values`` has the items on
  its first axis (``[n]`` or ``[n, k]`` columns); ``stat`` maps a resampled array (same layout)
  to a number, ``point`` is ``stat(values)``.
- :func:`ratio_ci` ``(numerators, denominators)``: a pooled rate, ``sum(num) / sum(den)``
  (corpus WER = total errors / total reference words), with the items resampled as pairs.
- :func:`paired_ratio_diff_ci` ``(num_a, num_b, den)``: the difference of two pooled rates
  measured on the same items (edited minus clean WER), the items resampled together, so the
  interval is that of the paired difference.
- :func:`interval` packs ``(point, lo, hi)`` and ``n`` into the dict the results files hold.

Deterministic: one ``numpy.random.Generator(seed)`` draws all ``n_boot`` resamples.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def resample_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` item indices drawn with replacement."""
    if n < 1:
        raise ValueError("the bootstrap needs at least one item")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values, stat: Callable = np.mean, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(stat(values), lo, hi)``: the percentile bootstrap interval of ``stat`` over items
    (the first axis of ``values``)."""
    values = np.asarray(values, dtype=np.float64)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    idx = resample_indices(len(values), n_boot, seed)
    draws = np.array([stat(values[i]) for i in idx], dtype=np.float64)
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail])
    return float(stat(values)), float(lo), float(hi)


def _ratio(columns: np.ndarray) -> float:
    den = columns[:, 1].sum()
    return float(columns[:, 0].sum() / den) if den > 0 else float("nan")


def _ratio_diff(columns: np.ndarray) -> float:
    den = columns[:, 2].sum()
    return float((columns[:, 0].sum() - columns[:, 1].sum()) / den) if den > 0 else float("nan")


def ratio_ci(numerators, denominators, **kwargs) -> tuple[float, float, float]:
    """``sum(num) / sum(den)`` with its bootstrap interval, items resampled as pairs (keyword
    arguments: those of :func:`bootstrap_ci`)."""
    return bootstrap_ci(np.column_stack([numerators, denominators]), _ratio, **kwargs)


def paired_ratio_diff_ci(num_a, num_b, denominators, **kwargs) -> tuple[float, float, float]:
    """``(sum(num_a) - sum(num_b)) / sum(den)`` over the same items, resampled together."""
    return bootstrap_ci(np.column_stack([num_a, num_b, denominators]), _ratio_diff, **kwargs)


def interval(point_lo_hi: tuple[float, float, float], n: int) -> dict:
    """``{"value", "lo", "hi", "n"}`` (rounded to 6 decimals: the files are read by people)."""
    point, lo, hi = point_lo_hi
    return {"value": round(point, 6), "lo": round(lo, 6), "hi": round(hi, 6), "n": int(n)}
