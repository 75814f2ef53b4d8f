"""Patching sweeps: one compiled sweep equals the single patches it stands for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxasr_interp.core import edits as E
from jaxasr_interp.whisper.model import decode, encode, forward
from jaxasr_interp.patching.sweeps import clean_token_logits, head_sweep
from test_model_parity import CONFIGS
from torch_ref import params_of, random_torch_model

DIMS, N_TOKENS = CONFIGS["base-like"]


@pytest.fixture(scope="module")
def setup():
    params = jax.tree_util.tree_map(jnp.asarray, params_of(random_torch_model(DIMS, seed=5), DIMS))
    rng = np.random.default_rng(2)
    mel, noise = (jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
                  for _ in range(2))
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, N_TOKENS), jnp.int32)
    features, _ = encode(params, mel, dims=DIMS)
    _, ref = forward(params, noise, tokens, dims=DIMS, capture=["decoder.cross_attn.z", "decoder.self_attn.z"])
    return params, tokens, features, ref


def gathered(logits, tokens):
    return np.asarray(logits)[np.arange(len(tokens) - 1), np.asarray(tokens[1:])]


def test_clean_token_logits_are_the_full_logits_at_the_clean_tokens(setup):
    params, tokens, features, ref = setup
    edit = {"decoder.mlp_out": E.zero(layers=[1])}
    full, _ = decode(params, tokens, features, dims=DIMS, edits=edit)
    got = clean_token_logits(params, tokens, features, dims=DIMS, edits=edit)
    np.testing.assert_allclose(np.asarray(got), gathered(full, tokens), rtol=0, atol=1e-4)


@pytest.mark.parametrize("site", ["decoder.cross_attn.z", "decoder.self_attn.z"])
def test_head_sweep_equals_single_patches(setup, site):
    params, tokens, features, ref = setup
    alphas = jnp.array([0.0, 0.5, 1.0])
    swept, unpatched = head_sweep(params, tokens, features, ref[site], alphas, dims=DIMS, site=site)
    swept = np.asarray(swept)
    assert swept.shape == (DIMS.n_text_layer, DIMS.n_text_head, 3, len(tokens) - 1)
    clean, _ = decode(params, tokens, features, dims=DIMS)
    np.testing.assert_allclose(np.asarray(unpatched), gathered(clean, tokens), rtol=0, atol=1e-4)
    np.testing.assert_allclose(swept[:, :, 0], np.broadcast_to(gathered(clean, tokens), swept[:, :, 0].shape),
                               rtol=0, atol=1e-4)  # alpha = 0 is the clean run
    for layer, head, a in ((0, 0, 1), (DIMS.n_text_layer - 1, DIMS.n_text_head - 1, 2), (1, 2, 1)):
        edit = {site: E.interpolate(ref[site], float(alphas[a]), layers=[layer], heads=[head])}
        single, _ = decode(params, tokens, features, dims=DIMS, edits=edit)
        np.testing.assert_allclose(swept[layer, head, a], gathered(single, tokens), rtol=0, atol=1e-4)
    assert np.abs(swept[:, :, 2] - swept[:, :, 0]).max() > 1e-3  # the patches do act (logits here are ~0.1)


def test_head_sweep_refuses_sites_without_heads(setup):
    params, tokens, features, ref = setup
    with pytest.raises(ValueError, match="per-head token sites"):
        head_sweep(params, tokens, features, ref["decoder.cross_attn.z"], jnp.ones(1), dims=DIMS,
                   site="decoder.mlp_out")


def test_decode_from_resumes_at_the_edited_layer(setup):
    import jaxasr_interp as jai
    params, tokens, features, ref = setup
    _, clean = decode(params, tokens, features, dims=DIMS, capture=["decoder.resid_pre"])
    layer = DIMS.n_text_layer - 2
    edits = {"decoder.cross_attn.z": E.interpolate(ref["decoder.cross_attn.z"], 0.7, layers=[layer], heads=[1])}
    full, acts = decode(params, tokens, features, dims=DIMS, edits=edits, capture=["decoder.mlp_out"])
    resumed, racts = jai.decode_from(params, clean["decoder.resid_pre"][layer], features, start_layer=layer,
                                     dims=DIMS, edits=edits, capture=["decoder.mlp_out"])
    np.testing.assert_allclose(np.asarray(resumed), np.asarray(full), rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.asarray(racts["decoder.mlp_out"]), np.asarray(acts["decoder.mlp_out"][layer:]),
                               rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="before start_layer"):
        jai.decode_from(params, clean["decoder.resid_pre"][layer], features, start_layer=layer + 1,
                        dims=DIMS, edits=edits)
