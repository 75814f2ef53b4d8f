"""Our JAX Whisper against transformers' eager PyTorch Whisper on random prime-sized configs
(two with MLP widths that are not 4 x d_model, as transformers' encoder/decoder_ffn_dim allow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.decoding import init_cache
from jaxasr_interp.whisper.model import decode, encode, forward
from jaxasr_interp.whisper.sites import ALL_SITES, n_layers as site_layers, shape as site_shape
from jaxasr_interp.weights import load_weights
from jaxasr_interp.weights.layout import iter_paths
from torch_ref import params_of, random_torch_model, reference_run

CONFIGS = {
    # name: (dims, n_tokens); widths are even (sinusoidal positions need it), heads odd
    "base-like": (Dims(n_mels=80, n_audio_ctx=23, n_audio_state=70, n_audio_head=5, n_audio_layer=3,
                       n_vocab=97, n_text_ctx=19, n_text_state=70, n_text_head=5, n_text_layer=3), 11),
    "turbo-like": (Dims(n_mels=80, n_audio_ctx=19, n_audio_state=78, n_audio_head=3, n_audio_layer=5,
                        n_vocab=101, n_text_ctx=23, n_text_state=78, n_text_head=3, n_text_layer=2), 13),
    "128-mels": (Dims(n_mels=128, n_audio_ctx=17, n_audio_state=42, n_audio_head=7, n_audio_layer=2,
                      n_vocab=89, n_text_ctx=13, n_text_state=42, n_text_head=7, n_text_layer=3), 7),
    # MLP widths that are not 4 x d_model (primes, wider and narrower than d_model)
    "ffn-primes": (Dims(n_mels=80, n_audio_ctx=19, n_audio_state=66, n_audio_head=3, n_audio_layer=2,
                        n_vocab=103, n_text_ctx=17, n_text_state=66, n_text_head=3, n_text_layer=2,
                        n_audio_ffn=137, n_text_ffn=53), 9),
    "ffn-narrow": (Dims(n_mels=80, n_audio_ctx=13, n_audio_state=30, n_audio_head=5, n_audio_layer=3,
                        n_vocab=83, n_text_ctx=11, n_text_state=30, n_text_head=5, n_text_layer=2,
                        n_audio_ffn=29, n_text_ffn=211), 7),
}
FFN_CONFIGS = [name for name, (d, _) in CONFIGS.items()
               if (d.n_audio_ffn, d.n_text_ffn) != (4 * d.n_audio_state, 4 * d.n_text_state)]
TOL = 1e-4


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
    dims, n_tokens = CONFIGS[request.param]
    torch_model = random_torch_model(dims, seed=len(request.param))
    params = jax.tree_util.tree_map(jnp.asarray, params_of(torch_model, dims))
    rng = np.random.default_rng(7)
    mel = rng.standard_normal((dims.n_mels, dims.n_samples_frames)).astype(np.float32)
    tokens = rng.integers(0, dims.n_vocab, n_tokens).astype(np.int32)
    return dims, params, mel, tokens, reference_run(torch_model, mel, tokens)


def test_every_site_matches_reference(case):
    dims, params, mel, tokens, ref = case
    logits, acts = forward(params, jnp.asarray(mel), jnp.asarray(tokens), dims=dims, capture=["*"])
    acts["logits"] = logits
    assert set(ref) == set(ALL_SITES)  # the reference reaches every site of the vocabulary
    for name, want in ref.items():
        got = np.asarray(acts[name])
        assert got.shape == want.shape, name
        layers = site_layers(name, dims)  # the vocabulary's shapes (mlp.hidden: the FFN width)
        assert ((layers,) if layers else ()) + site_shape(name, dims, len(tokens)) == want.shape, name
        assert np.abs(got - want).max() <= TOL, (name, np.abs(got - want).max())
        assert want.std() > 1e-3, f"{name} is degenerate; the comparison would prove nothing"


def test_reference_captures_are_the_tensors_they_name(case):
    """The reference's hooks are checked against its own arithmetic, so that agreeing with it
    proves our sites hold the named tensors: logits are ln_final times the tied embedding, each
    block's input is the previous block's output, resid_post = resid_mid(+cross) + mlp_out."""
    dims, params, mel, tokens, ref = case
    emb = np.asarray(params["decoder"]["token_embedding"]["embedding"])
    np.testing.assert_allclose(ref["decoder.ln_final"] @ emb.T, ref["logits"], rtol=0, atol=TOL)
    for stack, mid in (("encoder", "resid_mid"), ("decoder", "resid_mid_cross")):
        np.testing.assert_allclose(ref[f"{stack}.resid_pre"][1:], ref[f"{stack}.resid_post"][:-1], rtol=0, atol=TOL)
        np.testing.assert_allclose(ref[f"{stack}.{mid}"] + ref[f"{stack}.mlp_out"], ref[f"{stack}.resid_post"],
                                   rtol=0, atol=TOL)
    np.testing.assert_allclose(ref["encoder.resid_pre"][0], ref["encoder.embed"], rtol=0, atol=TOL)
    np.testing.assert_allclose(ref["decoder.resid_pre"][0], ref["decoder.embed"], rtol=0, atol=TOL)
    # attention rows are distributions; a degenerate reference would pass the sums trivially
    for name in ("encoder.attn.pattern", "decoder.self_attn.pattern", "decoder.cross_attn.pattern"):
        np.testing.assert_allclose(ref[name].sum(-1), 1.0, rtol=0, atol=1e-5)
        assert ref[name].std() > 1e-3
    assert max(ref[n].max() for n in ("encoder.attn.pattern", "decoder.cross_attn.pattern")) < 0.999
    causal = ref["decoder.self_attn.pattern"][..., np.triu_indices(len(tokens), 1)[0], np.triu_indices(len(tokens), 1)[1]]
    assert np.abs(causal).max() == 0.0  # the decoder's self-attention sees no future token


def test_kv_cache_decoding_equals_teacher_forcing(case):
    dims, params, mel, tokens, ref = case
    features, _ = encode(params, jnp.asarray(mel), dims=dims)
    cache = init_cache(params, features, dims=dims)
    split = 3  # a prompt of 3 tokens, then one token at a time
    logits, _, cache = decode(params, jnp.asarray(tokens[:split]), None, dims=dims, cache=cache, offset=0)
    rows = [np.asarray(logits)]
    step = jax.jit(lambda c, t, o: decode(params, t, None, dims=dims, cache=c, offset=o))
    for i in range(split, len(tokens)):
        logits, _, cache = step(cache, jnp.asarray(tokens[i:i + 1]), i)
        rows.append(np.asarray(logits))
    got = np.concatenate(rows)
    assert np.abs(got - ref["logits"]).max() <= TOL


def test_bfloat16_option_is_close_but_not_float32(case):
    dims, params, mel, tokens, ref = case
    logits, _ = forward(params, jnp.asarray(mel), jnp.asarray(tokens), dims=dims, dtype=jnp.bfloat16)
    err = np.abs(np.asarray(logits) - ref["logits"]).max()
    assert logits.dtype == jnp.float32
    assert 1e-4 < err < 0.1 * np.abs(ref["logits"]).max()


def test_vmap_batch_equals_single(case):
    dims, params, mel, tokens, ref = case
    mels = jnp.stack([jnp.asarray(mel), jnp.zeros_like(mel)])
    batched = jax.vmap(lambda m: forward(params, m, jnp.asarray(tokens), dims=dims)[0])(mels)
    assert np.abs(np.asarray(batched[0]) - ref["logits"]).max() <= TOL


def test_wrong_shapes_are_clear_errors(case):
    dims, params, mel, tokens, _ = case
    with pytest.raises(ValueError, match=r"mel has shape .* expected"):
        forward(params, jnp.asarray(mel[:, :-2]), jnp.asarray(tokens), dims=dims)
    with pytest.raises(ValueError, match="tokens must be 1-D"):
        forward(params, jnp.asarray(mel), jnp.asarray(tokens)[None], dims=dims)


@pytest.mark.parametrize("name", FFN_CONFIGS)
def test_ffn_widths_come_from_a_transformers_checkpoint(name, tmp_path):
    """transformers' save_pretrained -> load_weights: the FFN widths come from config.json (and
    Dims.from_params reads them from the weights); the parameters are the model's."""
    dims, _ = CONFIGS[name]
    model = random_torch_model(dims, seed=len(name))
    model.save_pretrained(tmp_path)
    loaded = load_weights(tmp_path)
    assert loaded.dims == dims
    assert (loaded.dims.n_audio_ffn, loaded.dims.n_text_ffn) == (dims.n_audio_ffn, dims.n_text_ffn)
    assert Dims.from_params(loaded.params, dims.n_audio_head, dims.n_text_head) == dims
    want = dict(iter_paths(params_of(model, dims)))
    got = dict(iter_paths(loaded.params))
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    assert got["encoder/blocks/mlp1/kernel"].shape == (dims.n_audio_layer, dims.n_audio_state, dims.n_audio_ffn)
    assert got["decoder/blocks/mlp2/kernel"].shape == (dims.n_text_layer, dims.n_text_ffn, dims.n_text_state)
