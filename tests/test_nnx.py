"""The flax.nnx view (jai.nnx.Whisper): same arrays as the parameter tree, same forward, and
an optax step through nnx.Optimizer that touches only the parameters it is asked to."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jaxasr_interp as jai
from jaxasr_interp.weights.layout import iter_paths
from test_weights import random_params as numpy_params

# Prime-sized so that any mix-up of axes shows as a shape error.
DIMS = jai.Dims(n_mels=13, n_audio_ctx=17, n_audio_state=20, n_audio_head=4, n_audio_layer=2,
                n_vocab=97, n_text_ctx=11, n_text_state=20, n_text_head=4, n_text_layer=3)
SITES = ["decoder.cross_attn.z", "decoder.resid_post", "encoder.attn.pattern", "decoder.ln_final"]
EDIT = {"decoder.cross_attn.z": jai.zero(layers=[1], heads=[2])}
FINAL_LN = ("decoder/ln/bias", "decoder/ln/scale")


@pytest.fixture(scope="module")
def setup():
    params = jax.tree_util.tree_map(jnp.asarray, numpy_params(DIMS))
    rng = np.random.default_rng(1)
    mel = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, 8), jnp.int32)
    return params, mel, tokens


def flat(tree) -> dict:
    return {path: np.asarray(leaf) for path, leaf in iter_paths(tree)}


def assert_same_tree(a, b):
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for path in fa:
        assert fa[path].shape == fb[path].shape and fa[path].dtype == fb[path].dtype, path
        assert np.array_equal(fa[path], fb[path]), path


@pytest.mark.parametrize("edits", [None, EDIT], ids=["clean", "zero-cross-attn-head"])
def test_module_call_is_the_pure_forward(setup, edits):
    params, mel, tokens = setup
    m = jai.nnx.Whisper(params, dims=DIMS)
    logits, acts = m(mel, tokens, edits=edits, capture=SITES)
    ref_logits, ref_acts = jai.forward(params, mel, tokens, dims=DIMS, edits=edits, capture=SITES)
    assert np.array_equal(np.asarray(logits), np.asarray(ref_logits))
    assert acts.keys() == ref_acts.keys() == set(SITES)
    for site in SITES:
        assert np.array_equal(np.asarray(acts[site]), np.asarray(ref_acts[site])), site
    if edits is not None:  # the edit acts, and the captured head is the zeroed one
        assert not np.any(np.asarray(acts["decoder.cross_attn.z"][1, :, 2]))  # [L, pos, head, feat]
        clean, _ = jai.forward(params, mel, tokens, dims=DIMS)
        assert not np.array_equal(np.asarray(clean), np.asarray(logits))
    # encode / decode mirror jai.encode / jai.decode
    af, enc_acts = m.encode(mel, edits=edits, capture=["encoder.attn.pattern"])
    ref_af, ref_enc = jai.encode(params, mel, dims=DIMS, edits=edits, capture=["encoder.attn.pattern"])
    assert np.array_equal(np.asarray(af), np.asarray(ref_af))
    assert np.array_equal(np.asarray(enc_acts["encoder.attn.pattern"]), np.asarray(ref_enc["encoder.attn.pattern"]))
    dec_logits, _ = m.decode(tokens, af, edits=edits)
    assert np.array_equal(np.asarray(dec_logits), np.asarray(ref_logits))


def test_state_and_split_give_back_the_parameter_tree(setup):
    params, _, _ = setup
    m = jai.nnx.Whisper(jai.Model(params, DIMS, tokenizer=None, source="random"))
    assert m.dims == DIMS
    assert isinstance(m.decoder["ln"]["scale"], nnx.Param)
    assert m.decoder["ln"]["scale"].get_value() is params["decoder"]["ln"]["scale"]  # the same array
    assert_same_tree(nnx.to_pure_dict(nnx.state(m, nnx.Param)), params)
    graphdef, state = nnx.split(m)
    assert_same_tree(nnx.to_pure_dict(state), params)  # nothing but the Params is state
    assert_same_tree(m.params_tree(), params)
    # dims is static: in the graphdef, not in the state; merge rebuilds an equal module
    assert "dims" not in nnx.to_pure_dict(state)
    merged = nnx.merge(graphdef, state)
    assert merged.dims == DIMS
    assert_same_tree(merged.params_tree(), params)
    # a Flax collection {"params": tree} and from_params build the same module
    assert_same_tree(jai.nnx.Whisper({"params": params}, dims=DIMS).params_tree(), params)
    assert_same_tree(jai.nnx.Whisper.from_params(params, DIMS).params_tree(), params)
    # params_under selects exactly the final LayerNorm
    sel = nnx.to_pure_dict(nnx.state(m, jai.nnx.params_under("decoder/ln")))
    assert sorted(flat(sel)) == list(FINAL_LN)
    with pytest.raises(TypeError, match="needs dims"):
        jai.nnx.Whisper(params)


def test_one_optax_step_trains_only_the_selected_parameters(setup):
    params, mel, tokens = setup
    lr = 1e-2
    wrt = jai.nnx.params_under("decoder/ln")
    m = jai.nnx.Whisper(params, dims=DIMS)
    opt = nnx.Optimizer(m, optax.sgd(lr), wrt=wrt)

    def pure_loss(p):
        logits, _ = jai.forward(p, mel, tokens[:-1], dims=DIMS, edits=EDIT)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[1:]).mean()

    def loss_fn(m):
        logits, _ = m(mel, tokens[:-1], edits=EDIT)
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[1:]).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(m)
        opt.update(m, grads)
        return loss, grads

    loss_before, grads = step(m, opt)
    assert sorted(flat(nnx.to_pure_dict(grads))) == list(FINAL_LN)
    after = flat(m.params_tree())
    before = flat(params)
    assert after.keys() == before.keys()
    for path in before:
        if path in FINAL_LN:
            assert not np.array_equal(after[path], before[path]), path
        else:
            assert np.array_equal(after[path], before[path]), path
    # the same step by hand: jax.grad of the pure function, w.r.t. those leaves only
    ref_loss, ref_grad = jax.value_and_grad(
        lambda ln: pure_loss({**params, "decoder": {**params["decoder"], "ln": ln}}))(params["decoder"]["ln"])
    np.testing.assert_allclose(float(loss_before), float(ref_loss), rtol=1e-6)
    for name in ("scale", "bias"):
        want = np.asarray(params["decoder"]["ln"][name] - lr * ref_grad[name])
        np.testing.assert_allclose(after[f"decoder/ln/{name}"], want, rtol=1e-6, atol=1e-7)
    assert float(pure_loss(m.params_tree())) < float(loss_before)
    assert float(loss_fn(m)) < float(loss_before)
    # the trained parameters go back into a jai.Model for the pure tools
    trained = m.to_model(jai.Model(params, DIMS, tokenizer=None, source="random"))
    assert trained.dims == DIMS and trained.source == "random"
    assert_same_tree(trained.params, m.params_tree())


def test_real_tiny_en_on_jfk():
    start = time.perf_counter()
    model = jai.load("tiny.en")
    m = jai.nnx.Whisper(model)
    mel = jai.log_mel(jai.load_audio(jai.sample_path("jfk.wav")), n_mels=model.dims.n_mels)
    tokens = jnp.asarray(model.tokenizer.prompt() + model.tokenizer.encode(" And so my fellow Americans"), jnp.int32)
    logits, _ = m(mel, tokens)
    ref, _ = jai.forward(model.params, mel, tokens, dims=model.dims)
    assert np.array_equal(np.asarray(logits), np.asarray(ref))
    # the prediction after "And so my fellow" is " Americans"
    assert int(jnp.argmax(logits[-2])) == int(tokens[-1])
    print(f"tiny.en nnx check: {time.perf_counter() - start:.1f} s")
