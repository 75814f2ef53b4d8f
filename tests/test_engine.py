"""The engine: edits and captures reach only their stack (counted in traces), resuming a stack
at a layer equals the full pass, one position slicer serves both families' cached decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxasr_interp as jai
from jaxasr_interp.core import edits as E
from jaxasr_interp.core.engine import unwrap
from jaxasr_interp.qwen2_audio.sites import QWEN2_AUDIO
from jaxasr_interp.whisper import model as whisper_model
from jaxasr_interp.whisper.sites import WHISPER
from test_model_parity import CONFIGS
from torch_ref import params_of, random_torch_model

DIMS, N_TOKENS = CONFIGS["base-like"]


@pytest.fixture(scope="module")
def setup():
    params = jax.tree_util.tree_map(jnp.asarray, params_of(random_torch_model(DIMS, seed=5), DIMS))
    rng = np.random.default_rng(2)
    mel = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, N_TOKENS), jnp.int32)
    return params, mel, tokens


def test_a_decoder_only_edit_never_retraces_the_encoder(setup):
    params, mel, tokens = setup
    jai.forward(params, mel, tokens, dims=DIMS)
    traced = whisper_model._encode._cache_size()
    for site, edit in (("decoder.mlp_out", jai.zero(layers=[1])),
                       ("decoder.cross_attn.z", jai.zero(layers=[0], heads=[1])),
                       ("logits", jai.add(jnp.ones((1, DIMS.n_vocab))))):
        logits, _ = jai.forward(params, mel, tokens, dims=DIMS, edits={site: edit},
                                capture=["decoder.resid_post"])
        assert whisper_model._encode._cache_size() == traced, site
    # and an encoder edit does compile a new encoder (the counter counts)
    jai.forward(params, mel, tokens, dims=DIMS, edits={"encoder.mlp_out": jai.zero(layers=[0])})
    assert whisper_model._encode._cache_size() == traced + 1


def test_a_typo_is_an_error_whichever_stack_runs(setup):
    params, mel, _ = setup
    with pytest.raises(KeyError, match="did you mean decoder.mlp_out"):
        jai.encode(params, mel, dims=DIMS, edits={"decoder.mlp_ot": jai.zero()})


@pytest.mark.parametrize("layer", [0, 2])
def test_resuming_a_stack_at_a_layer_equals_the_full_pass(setup, layer):
    params, mel, tokens = setup
    edit = {"encoder.mlp_out": jai.zero(layers=[DIMS.n_audio_layer - 1]),
            "decoder.cross_attn_out": jai.zero(layers=[DIMS.n_text_layer - 1])}
    sites = ["encoder.resid_pre", "decoder.resid_pre", "decoder.resid_post"]
    full_feats, acts = jai.encode(params, mel, dims=DIMS, edits=edit, capture=sites)
    logits, dec = jai.decode(params, tokens, full_feats, dims=DIMS, edits=edit, capture=sites)
    feats, _ = jai.encode(params, acts["encoder.resid_pre"][layer], dims=DIMS, edits=edit, start_layer=layer)
    assert np.array_equal(feats, full_feats)
    resumed, racts = jai.decode(params, dec["decoder.resid_pre"][layer], full_feats, dims=DIMS, edits=edit,
                                start_layer=layer, capture=["decoder.resid_post"])
    assert np.allclose(resumed, logits, rtol=0, atol=1e-5) and np.abs(resumed - logits).max() < 1e-5
    assert racts["decoder.resid_post"].shape[0] == DIMS.n_text_layer - layer
    np.testing.assert_allclose(racts["decoder.resid_post"], dec["decoder.resid_post"][layer:], atol=1e-5)


def test_resuming_refuses_an_edit_before_the_start_layer(setup):
    params, mel, _ = setup
    _, acts = jai.encode(params, mel, dims=DIMS, capture=["encoder.resid_pre"])
    with pytest.raises(ValueError, match="before start_layer=1"):
        jai.encode(params, acts["encoder.resid_pre"][1], dims=DIMS, start_layer=1,
                   edits={"encoder.mlp_out": jai.zero(layers=[0])})


def test_a_flax_variable_collection_is_accepted(setup):
    params, mel, tokens = setup
    a, _ = jai.forward(params, mel, tokens, dims=DIMS)
    b, _ = jai.forward({"params": params}, mel, tokens, dims=DIMS)
    assert unwrap({"params": params}) is params and np.array_equal(a, b)


@pytest.mark.parametrize("family", [WHISPER, QWEN2_AUDIO])
def test_one_position_slicer_for_both_families(family):
    """Positions 0..n-1 of an edit act on tokens 0..n-1; later tokens are unedited; a slice
    across the end gets weight 0 there. The same code for Whisper and Qwen2-Audio."""
    dims = DIMS if family is WHISPER else jai.qwen2_audio.QwenAudioDims(
        n_mels=13, n_audio_ctx=17, n_audio_state=20, n_audio_head=4, n_audio_layer=2, n_vocab=97,
        n_text_state=24, n_text_head=4, n_kv_head=2, n_text_layer=3, n_text_ffn=40, n_text_ctx=64,
        audio_token_id=5)
    site = "decoder.mlp_out"
    n_layer, d = family.n_layers(site, dims), family.shape(site, dims, 1)[-1]
    data = jnp.arange(n_layer * 4 * d, dtype=jnp.float32).reshape(n_layer, 4, d)
    resolved = E.resolve_positions(family, {site: jai.replace(data)}, dims, default_len=50)
    got = E.slice_positions(family, resolved, dims, 2, 3)[site]
    assert got.data.shape == (n_layer, 3, d)
    np.testing.assert_array_equal(got.data[:, :2], data[:, 2:4])
    np.testing.assert_array_equal(got.alpha[:, :, 0], np.broadcast_to([1.0, 1.0, 0.0], (n_layer, 3)))
    one = E.slice_positions(family, resolved, dims, jnp.int32(3), 1)[site]
    np.testing.assert_array_equal(one.data[:, 0], data[:, 3])
    assert float(E.slice_positions(family, resolved, dims, 7, 1)[site].alpha.max()) == 0.0
    pattern = "decoder.self_attn.pattern" if family is WHISPER else "decoder.attn.pattern"
    with pytest.raises(ValueError, match="key axis grows"):
        E.resolve_positions(family, {pattern: jai.zero()}, dims, default_len=50)


def test_model_variables_serialise_with_flax():
    """Model.variables is a Flax collection that flax.serialization round-trips bit for bit."""
    from flax import serialization
    model = jai.load("tiny.en")
    data = serialization.to_bytes(model.variables)
    back = serialization.from_bytes(jax.tree_util.tree_map(np.zeros_like, model.variables), data)
    leaves = jax.tree_util.tree_leaves_with_path(back["params"])
    assert len(leaves) == len(jax.tree_util.tree_leaves(model.params))
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        assert name.rsplit("'", 2)[-2] in ("kernel", "bias", "scale", "embedding"), name
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(back["params"]),
                                                  jax.tree_util.tree_leaves(model.params)))
