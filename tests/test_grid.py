"""The one patch-grid builder and the shared token / text helpers: layouts, values, and that the
host (numpy) and traced (jax) paths agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxasr_interp.core.grid import join_sites, patch_grid, weighted_mask
from jaxasr_interp.patching.reference import white_noise
from jaxasr_interp.patching.sweeps import family_grid, local_masks
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.text_metrics import normalize, words
from jaxasr_interp.whisper.tokenizer import cut_at_eot, teacher_tokens

DIMS = Dims(n_mels=80, n_audio_ctx=7, n_audio_state=6, n_audio_head=2, n_audio_layer=2, n_vocab=11,
            n_text_ctx=5, n_text_state=6, n_text_head=3, n_text_layer=4)
HEADS = np.eye(3, dtype=np.float32).reshape(3, 1, 3)


def test_patch_grid_is_layer_then_patch_then_alpha():
    weights, index = patch_grid(HEADS, 4, (0.5, 1.0))
    assert weights.shape == (4 * 3 * 2, 4, 1, 3) and weights.dtype == np.float32
    assert index.tolist() == [[l, p, a] for l in range(4) for p in range(3) for a in range(2)]
    for k, (layer, head, a) in enumerate(index):
        want = np.zeros((4, 1, 3), np.float32)
        want[layer, 0, head] = (0.5, 1.0)[a]
        np.testing.assert_array_equal(weights[k], want)


def test_patch_grid_selects_layers_and_patches():
    weights, index = patch_grid(HEADS, 4, [0.25], layers=[2], patches=[1])
    assert weights.shape == (1, 4, 1, 3) and index.tolist() == [[2, 1, 0]]
    assert weights[0, 2, 0, 1] == 0.25 and weights.sum() == 0.25
    with pytest.raises(IndexError, match="out of range"):
        patch_grid(HEADS, 4, layers=[4])


def test_traced_alphas_give_the_same_weights_as_host_ones():
    host, _ = patch_grid(HEADS, 4, np.asarray([0.3, 0.7], np.float32))
    traced = jax.jit(lambda a: patch_grid(HEADS, 4, a)[0])(jnp.asarray([0.3, 0.7]))
    assert isinstance(traced, jax.Array)
    np.testing.assert_array_equal(np.asarray(traced), host)


def test_family_grid_covers_every_component_of_a_family():
    site, weights, index = family_grid("decoder.cross_attn", DIMS, (1.0,))
    assert site == "decoder.cross_attn_out" and weights.shape == (4, 4, 1)
    np.testing.assert_array_equal(weights[:, :, 0], np.eye(4))
    site, weights, index = family_grid("encoder.head", DIMS, (0.5, 1.0), layers=[1])
    assert site == "encoder.attn.z" and weights.shape == (2 * 2, 2, 1, 2)
    assert index[:, 0].tolist() == [1] * 4 and index[:, 1].tolist() == [0, 0, 1, 1]


def test_join_sites_pads_with_zero_weights():
    a = {"x": np.ones((2, 3, 1), np.float32)}
    b = {"y": np.full((1, 3, 2), 2.0, np.float32), "x": np.full((1, 3, 1), 3.0, np.float32)}
    joined = join_sites(a, b)
    assert joined["x"].shape == (3, 3, 1) and joined["y"].shape == (3, 3, 2)
    assert joined["x"][:, 0, 0].tolist() == [1, 1, 3] and joined["y"][:, 0, 0].tolist() == [0, 0, 2]


def test_weighted_mask_sums_the_weighted_patches():
    w = jnp.asarray([[1.0, 0.0, 2.0], [0.0, 0.5, 0.0]])
    got = np.asarray(weighted_mask(w, local_masks("decoder.cross_head", DIMS)))
    assert got.shape == (2, 1, 3) and got[:, 0].tolist() == [[1, 0, 2], [0, 0.5, 0]]


def test_teacher_tokens_and_the_end_of_text_cut():
    eot = 9
    assert teacher_tokens([1, 2], [5, 6], eot) == [1, 2, 5, 6, 9]
    assert teacher_tokens([1, 2], [5, 6], eot, 7) == [1, 2, 5, 6, 9, 9, 9]
    assert teacher_tokens([1, 2], [5, 6], eot, 4) == [1, 2, 5, 6]  # cut to the width
    assert cut_at_eot(np.asarray([5, 6, 9, 9]), eot) == [5, 6]
    assert cut_at_eot([5, 6], eot) == [5, 6] and cut_at_eot([9, 5], eot) == []


def test_the_plain_normaliser_and_seeded_white_noise():
    assert words("Hello,  World! It's 2") == ["hello", "world", "it's", "2"]
    assert normalize("Hello,  World! It's", "plain") == "hello world it's"
    np.testing.assert_array_equal(white_noise(0.5, seed=3), white_noise(0.5, seed=3))
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    a = white_noise(rng=rng_a, n_samples=100)
    assert a.shape == (100,) and a.dtype == np.float32
    np.testing.assert_array_equal(a, (0.1 * rng_b.standard_normal(100)).astype(np.float32))
