"""Attribution patching: its gradients equal finite differences of the real sweep (alpha = 0
+- eps; the sweep itself equals single patches, test_patching_sweeps.py) and of two plain
single-edit forward passes; zero ablation too. It reuses test_patching_sweeps's compiled
programs (same config, shapes and families)."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxasr_interp.patching.attribution import attribution_patching, rank_correlation, score, sweep_effect
from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep, single_patch_edits
from test_patching_sweeps import DIMS, N_TOKENS, make_setup, run

EPS = 1e-2
FAMS = ("encoder.block", "encoder.head", "decoder.cross_head")
RTOL, ATOL = 5e-3, 5e-5  # float32 central differences: rounding ~1e-5 here, curvature ~eps^2


@pytest.fixture(scope="module")
def setup():
    params, mel, noise, tokens, contrast = make_setup()
    _, _, ref = run(params, noise, tokens, contrast)
    weights = jnp.asarray(np.random.default_rng(4).uniform(0.2, 1.0, N_TOKENS - 1), jnp.float32)
    # This random model's patches barely reach the logits (derivatives ~1e-3, where float32
    # rounding of a central difference is ~1e-5): a reference 3x further from the clean
    # activations makes the derivatives larger (any reference data is valid for this check).
    scale = {f: 3.0 for f in FAMS}
    return params, mel, tokens, contrast, {f: scale[f] * ref[FAMILIES[f]] for f in FAMS}, weights


def finite_differences(params, mel, tokens, contrast, refs, weights, family, mode):
    patched, clean = component_sweep(params, mel, tokens, refs.get(family), jnp.array([-EPS, 0.0, EPS]),
                                     contrast, dims=DIMS, family=family, mode=mode)
    effect = np.asarray(sweep_effect(patched, clean, weights, "logit_diff"))  # [L, P, 3]
    return (effect[..., 2] - effect[..., 0]) / (2 * EPS), float(score(clean, weights, "logit_diff"))


@pytest.mark.parametrize("mode", ["interpolate", "zero"])
def test_attribution_equals_finite_differences_of_the_sweep(setup, mode):
    params, mel, tokens, contrast, refs, weights = setup
    # logit_diff = contrast logit - clean logit: both readouts enter the gradient
    grads, clean_score = attribution_patching(params, mel, tokens, refs, weights, contrast, dims=DIMS,
                                              families=FAMS, metric="logit_diff", mode=mode)
    for family in FAMS:  # the families attributed (test_patching_sweeps sweeps all ten)
        finite, sweep_clean = finite_differences(params, mel, tokens, contrast, refs, weights, family, mode)
        np.testing.assert_allclose(sweep_clean, float(clean_score), rtol=0, atol=1e-4)
        got = np.asarray(grads[family])
        assert got.shape == finite.shape, family
        np.testing.assert_allclose(got, finite, rtol=RTOL, atol=ATOL, err_msg=family)
        assert np.abs(got).max() > 20 * ATOL, f"{family}: gradients too small to prove anything"


def test_finite_difference_of_one_head_by_plain_forward(setup):
    """An encoder head's derivative from two independent single-edit forward passes."""
    params, mel, tokens, contrast, refs, weights = setup
    grads, _ = attribution_patching(params, mel, tokens, refs, weights, contrast, dims=DIMS, families=FAMS,
                                    metric="logit_diff")

    def s(alpha):
        edits = single_patch_edits("encoder.head", refs["encoder.head"], 1, alpha, dims=DIMS, head=2)
        return float(score(run(params, mel, tokens, contrast, edits)[0], weights, "logit_diff"))

    finite = (s(EPS) - s(-EPS)) / (2 * EPS)
    got = float(grads["encoder.head"][1, 2])
    assert abs(got - finite) <= ATOL + RTOL * abs(finite) and abs(finite) > 20 * ATOL, (got, finite)


def test_rank_correlation_known_values():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 35, 80]) == pytest.approx(1.0, abs=1e-12)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0, abs=1e-12)
    assert rank_correlation([[1, 2], [3, 4]], [[1, 3], [2, 4]]) == pytest.approx(0.8, abs=1e-12)
    assert np.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_remat_gives_the_same_estimates_with_less_memory(setup):
    """remat=True recomputes each layer in the backward pass: the estimates agree with the
    default to float32 rounding, and the compiled program's temporary memory is smaller (the
    backward no longer keeps every layer's attention)."""
    import jax

    params, mel, tokens, contrast, refs, weights = setup
    kw = dict(dims=DIMS, families=FAMS, metric="logit_diff")
    want, want_clean = attribution_patching(params, mel, tokens, refs, weights, contrast, **kw)
    got, got_clean = attribution_patching(params, mel, tokens, refs, weights, contrast, remat=True, **kw)
    assert float(got_clean) == float(want_clean)  # the forward value is untouched
    for family in FAMS:
        scale = np.abs(np.asarray(want[family])).max()
        np.testing.assert_allclose(np.asarray(got[family]), np.asarray(want[family]), rtol=1e-4,
                                   atol=1e-5 * scale, err_msg=family)
    from jaxasr_interp.patching.attribution import _attribution
    from jaxasr_interp.patching.attribution import _checked

    fams, checked = _checked("logit_diff", FAMS, refs, "interpolate", DIMS, len(tokens))

    def temp_bytes(remat):
        lowered = _attribution.lower(params, mel, tokens, checked, weights, contrast, dims=DIMS, families=fams,
                                     metric="logit_diff", dtype=jnp.float32, precision="highest", remat=remat)
        return lowered.compile().memory_analysis().temp_size_in_bytes

    plain, rematted = temp_bytes(False), temp_bytes(True)
    assert rematted < 0.8 * plain, (rematted, plain)
