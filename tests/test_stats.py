"""core.stats: the percentile bootstrap against cases whose answer is known."""

import numpy as np
import pytest

from jaxasr_interp.core.stats import bootstrap_ci, interval, paired_ratio_diff_ci, ratio_ci


def test_interval_of_the_mean_covers_the_true_mean_at_about_the_nominal_rate():
    n, trials, sd = 40, 300, 2.0
    rng = np.random.default_rng(0)
    covered, widths = 0, []
    for t in range(trials):
        x = rng.normal(1.0, sd, n)
        point, lo, hi = bootstrap_ci(x, n_boot=400, seed=t)
        assert point == pytest.approx(x.mean())
        covered += lo <= 1.0 <= hi
        widths.append(hi - lo)
    # the percentile bootstrap undercovers a little at small n (about 0.93 at n = 40)
    assert 0.88 <= covered / trials <= 0.98
    assert np.mean(widths) == pytest.approx(2 * 1.96 * sd / np.sqrt(n), rel=0.08)


def test_level_and_seed():
    x = np.random.default_rng(1).normal(size=30)
    wide, narrow = bootstrap_ci(x, level=0.99), bootstrap_ci(x, level=0.5)
    assert wide[1] < narrow[1] < narrow[2] < wide[2]
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, seed=3) != bootstrap_ci(x, seed=4)
    assert bootstrap_ci(np.full(5, 0.25)) == (0.25, 0.25, 0.25)
    with pytest.raises(ValueError, match="at least one item"):
        bootstrap_ci([])


def test_ratio_is_pooled_and_resamples_pairs():
    errors, words = np.array([1, 0, 3, 2]), np.array([10, 5, 10, 5])
    point, lo, hi = ratio_ci(errors, words)
    assert point == pytest.approx(6 / 30)
    assert lo <= point <= hi
    # a constant per-item rate has a degenerate interval only if pairs stay together
    assert ratio_ci(np.array([1, 2, 3]), np.array([10, 20, 30]))[1:] == pytest.approx((0.1, 0.1))


def test_paired_difference_is_narrower_than_the_unpaired_spread():
    rng = np.random.default_rng(2)
    words = rng.integers(5, 20, 50)
    clean = rng.binomial(words, 0.3)
    edited = clean + rng.binomial(words, 0.05)  # item difficulty shared by both conditions
    point, lo, hi = paired_ratio_diff_ci(edited, clean, words)
    assert point == pytest.approx((edited.sum() - clean.sum()) / words.sum())
    assert 0 < lo < point < hi
    a, b = ratio_ci(edited, words), ratio_ci(clean, words)
    assert hi - lo < (a[2] - a[1]) + (b[2] - b[1])


def test_interval_dict():
    assert interval((0.1234567, 0.1, 0.2), 7) == {"value": 0.123457, "lo": 0.1, "hi": 0.2, "n": 7}
