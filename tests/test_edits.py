"""Edits as data: identities, agreement with hooked PyTorch, sweeps, gradients, decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxasr_interp.core import edits as E
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import encode, forward
from jaxasr_interp.whisper.sites import SiteError
from test_model_parity import CONFIGS
from torch_ref import params_of, random_torch_model

DIMS, N_TOKENS = CONFIGS["base-like"]


@pytest.fixture(scope="module")
def setup():
    torch_model = random_torch_model(DIMS, seed=3)
    params = jax.tree_util.tree_map(jnp.asarray, params_of(torch_model, DIMS))
    rng = np.random.default_rng(11)
    mel = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    noise = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, N_TOKENS), jnp.int32)
    return torch_model, params, mel, noise, tokens


def run(params, mel, tokens, **kw):
    return forward(params, mel, tokens, dims=DIMS, **kw)


def test_alpha_zero_and_empty_mask_are_exact_identities(setup):
    _, params, mel, noise, tokens = setup
    clean, _ = run(params, mel, tokens)
    _, ref = run(params, noise, tokens, capture=["decoder.cross_attn_out", "encoder.attn.z"])
    for edit in ({"decoder.cross_attn_out": E.interpolate(ref["decoder.cross_attn_out"], alpha=0.0)},
                 {"encoder.attn.z": E.interpolate(ref["encoder.attn.z"], mask=jnp.zeros((DIMS.n_audio_layer,)))}):
        logits, _ = run(params, mel, tokens, edits=edit)
        assert np.array_equal(np.asarray(logits), np.asarray(clean))
    patched, _ = run(params, mel, tokens, edits={
        "decoder.cross_attn_out": E.interpolate(ref["decoder.cross_attn_out"], alpha=1.0, layers=[1])})
    assert np.abs(np.asarray(patched) - np.asarray(clean)).max() > 1e-3  # and a real patch does act


def test_patching_every_layers_residual_reproduces_the_reference_run(setup):
    _, params, mel, noise, tokens = setup
    ref_logits, ref = run(params, noise, tokens, capture=["decoder.resid_post"])
    logits, _ = run(params, mel, tokens,
                    edits={"decoder.resid_post": E.interpolate(ref["decoder.resid_post"])})
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=0)


def torch_logits(model, mel, tokens, hooks):
    handles = [module.register_forward_hook(fn) if kind == "out" else module.register_forward_pre_hook(fn)
               for module, kind, fn in hooks]
    try:
        with torch.no_grad():
            out = model(input_features=torch.from_numpy(np.asarray(mel))[None],
                        decoder_input_ids=torch.from_numpy(np.asarray(tokens)).long()[None]).logits[0]
    finally:
        for h in handles:
            h.remove()
    return out.numpy()


def test_mlp_zero_ablation_matches_hooked_pytorch(setup):
    torch_model, params, mel, _, tokens = setup
    fc2 = torch_model.model.decoder.layers[0].fc2
    want = torch_logits(torch_model, mel, tokens, [(fc2, "out", lambda m, i, o: torch.zeros_like(o))])
    got, _ = run(params, mel, tokens, edits={"decoder.mlp_out": E.zero(layers=[0])})
    assert np.abs(np.asarray(got) - want).max() <= 1e-4


def test_single_head_patch_matches_hooked_pytorch(setup):
    torch_model, params, mel, noise, tokens = setup
    _, ref = run(params, noise, tokens, capture=["decoder.cross_attn.z"])
    layer, head, alpha = 1, 3, 0.7
    z_ref = torch.from_numpy(np.asarray(ref["decoder.cross_attn.z"][layer]))  # [T, H, dh]
    d_head = DIMS.n_text_state // DIMS.n_text_head

    def patch(module, args):
        z = args[0].clone().view(1, len(tokens), DIMS.n_text_head, d_head)
        z[0, :, head] = (1 - alpha) * z[0, :, head] + alpha * z_ref[:, head]
        return (z.view(1, len(tokens), -1),)

    out_proj = torch_model.model.decoder.layers[layer].encoder_attn.out_proj
    want = torch_logits(torch_model, mel, tokens, [(out_proj, "pre", patch)])
    got, _ = run(params, mel, tokens, edits={"decoder.cross_attn.z": E.interpolate(
        ref["decoder.cross_attn.z"], alpha=alpha, layers=[layer], heads=[head])})
    assert np.abs(np.asarray(got) - want).max() <= 1e-4


def test_a_vmapped_sweep_over_layers_and_alphas_equals_single_runs(setup):
    _, params, mel, noise, tokens = setup
    _, ref = run(params, noise, tokens, capture=["decoder.self_attn_out"])
    data = ref["decoder.self_attn_out"]

    def one(layer, alpha):
        edit = {"decoder.self_attn_out": E.interpolate(data, alpha=alpha, layers=layer)}
        return run(params, mel, tokens, edits=edit)[0]

    layers = jnp.arange(DIMS.n_text_layer).repeat(2)
    alphas = jnp.tile(jnp.array([0.5, 1.0]), DIMS.n_text_layer)
    swept = jax.jit(jax.vmap(one))(layers, alphas)
    for i in range(len(layers)):
        single = one(int(layers[i]), float(alphas[i]))
        assert np.abs(np.asarray(swept[i]) - np.asarray(single)).max() <= 1e-5


def test_grad_with_respect_to_alpha_equals_finite_differences(setup):
    _, params, mel, noise, tokens = setup
    _, ref = run(params, noise, tokens, capture=["decoder.cross_attn_out"])

    def metric(alpha):
        edit = {"decoder.cross_attn_out": E.interpolate(ref["decoder.cross_attn_out"], alpha=alpha, layers=[2])}
        logits = run(params, mel, tokens, edits=edit)[0]
        return (logits[:, 5] - logits[:, 7]).sum()

    grad = jax.grad(metric)(0.3)
    h = 1e-2
    fd = (metric(0.3 + h) - metric(0.3 - h)) / (2 * h)
    assert abs(float(grad)) > 1e-3
    assert abs(float(grad) - float(fd)) <= 1e-2 * max(1.0, abs(float(fd)))


def test_bad_edits_are_clear_errors(setup):
    _, params, mel, _, tokens = setup
    with pytest.raises(ValueError, match=r"decoder.mlp_out.*does not broadcast"):
        run(params, mel, tokens, edits={"decoder.mlp_out": E.add(jnp.ones((2, 5, 3)))})
    with pytest.raises(SiteError, match="did you mean decoder.cross_attn_out"):
        run(params, mel, tokens, edits={"decoder.cross_atn_out": E.zero()})
    with pytest.raises(SiteError, match="unknown site"):
        run(params, mel, tokens, capture=["decoder.nothing"])
    with pytest.raises(ValueError, match="no head axis"):
        run(params, mel, tokens, edits={"decoder.mlp_out": E.zero(heads=[1])})


def test_edits_act_inside_cached_greedy_decoding(setup):
    """Greedy tokens under an edit are the argmax of the teacher-forced edited forward pass."""
    _, params, mel, noise, _ = setup
    prompt = jnp.array([1, 2], jnp.int32)
    zero_bias = logit_bias(DIMS.n_vocab, ())
    n_new = DIMS.n_text_ctx - len(prompt)
    eot = DIMS.n_vocab - 1  # never emitted at random init in practice: decode to full length
    _, ref = run(params, noise, jnp.zeros((DIMS.n_text_ctx - 1,), jnp.int32),
                 capture=["decoder.cross_attn_out"])
    edit = {"decoder.cross_attn_out": E.interpolate(ref["decoder.cross_attn_out"], alpha=1.0, layers=[0, 1, 2])}
    features = encode(params, mel, dims=DIMS)[0][None]
    plain = np.asarray(greedy_decode(params, features, prompt, eot, zero_bias, zero_bias, dims=DIMS, max_new_tokens=n_new))[0]
    edited = np.asarray(greedy_decode(params, features, prompt, eot, zero_bias, zero_bias, dims=DIMS,
                                      max_new_tokens=n_new, edits=edit))[0]
    assert not np.array_equal(plain, edited)
    seq = jnp.concatenate([prompt, jnp.asarray(edited[:-1])])
    logits, _ = run(params, mel, seq, edits=edit)
    assert np.array_equal(np.asarray(logits.argmax(-1))[len(prompt) - 1:], edited)


def test_a_decoder_edit_sweep_runs_the_encoder_once(setup):
    """vmap over decoder-edit alphas leaves the encoder unbatched: one encoder pass per sweep."""
    _, params, mel, noise, tokens = setup
    _, ref = run(params, noise, tokens, capture=["decoder.mlp_out"])

    def one(alpha):
        return run(params, mel, tokens, edits={"decoder.mlp_out": E.interpolate(ref["decoder.mlp_out"], alpha)})[0]

    jaxpr = jax.make_jaxpr(jax.vmap(one))(jnp.linspace(0, 1, 5))
    calls = {str(eqn.params.get("name")): eqn for eqn in jaxpr.jaxpr.eqns if "jaxpr" in eqn.params}
    encoder_out = calls["_encode"].outvars[0].aval.shape
    decoder_out = calls["_decode"].outvars[0].aval.shape
    assert encoder_out == (DIMS.n_audio_ctx, DIMS.n_audio_state)  # no sweep axis
    assert decoder_out == (5, len(tokens), DIMS.n_vocab)


def test_white_noise_reference_runs_are_seeded_and_aligned_with_the_clean_tokens():
    import jaxasr_interp as jai
    model = jai.load("tiny.en")
    tokens = jnp.asarray(model.tokenizer.prompt() + model.tokenizer.encode(" Hello there"))
    a = jai.reference_activations(model, tokens, ["decoder.cross_attn_out"], seed=1)
    b = jai.reference_activations(model, tokens, ["decoder.cross_attn_out"], seed=1)
    c = jai.reference_activations(model, tokens, ["decoder.cross_attn_out"], seed=2)
    speech = jai.reference_activations(model, tokens, ["decoder.cross_attn_out"], reference=jai.sample_path("jfk.wav"))
    shape = (model.dims.n_text_layer, len(tokens), model.dims.n_text_state)
    assert a["decoder.cross_attn_out"].shape == shape
    assert np.array_equal(np.asarray(a["decoder.cross_attn_out"]), np.asarray(b["decoder.cross_attn_out"]))
    assert not np.array_equal(np.asarray(a["decoder.cross_attn_out"]), np.asarray(c["decoder.cross_attn_out"]))
    assert np.abs(np.asarray(speech["decoder.cross_attn_out"]) - np.asarray(a["decoder.cross_attn_out"])).max() > 0.1
