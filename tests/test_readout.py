"""``readout=ids``: logits of only the wanted token ids, ``[T, k]``, equal to gathering them from
the full ``[T, n_vocab]`` logits (Whisper and Qwen2-Audio; with captures, under jit and vmap);
a readout sweep resumed at each layer equals the full-logits sweep; a vmapped readout sweep
never computes a vocabulary-wide product; bad readouts are one-line errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import ClosedJaxpr, Jaxpr

import jaxasr_interp as jai
from jaxasr_interp.patching.sweeps import head_sweep
from jaxasr_interp.whisper.model import cross_kv_stack
from test_model_parity import CONFIGS
from torch_ref import params_of, random_torch_model

DIMS, N_TOKENS = CONFIGS["base-like"]
K = 4
ALPHAS = jnp.asarray([0.5, 1.0])


@pytest.fixture(scope="module")
def setup():
    params = jax.tree_util.tree_map(jnp.asarray, params_of(random_torch_model(DIMS, seed=11), DIMS))
    rng = np.random.default_rng(4)
    mel = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    noise = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, N_TOKENS), jnp.int32)
    ids = jnp.asarray(rng.integers(0, DIMS.n_vocab, (N_TOKENS, K)), jnp.int32)
    return params, mel, noise, tokens, ids


def gathered(logits, ids):
    return jnp.take_along_axis(logits, ids, axis=-1)


def test_readout_equals_the_gathered_full_logits_with_captures(setup):
    params, mel, _, tokens, ids = setup
    edits = {"decoder.mlp_out": jai.zero(layers=[1])}
    sites = ["decoder.resid_post", "decoder.ln_final", "logits"]
    full, acts = jai.forward(params, mel, tokens, dims=DIMS, edits=edits, capture=sites)
    got, racts = jai.forward(params, mel, tokens, dims=DIMS, edits=edits, capture=sites, readout=ids)
    assert got.shape == (N_TOKENS, K) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, gathered(full, ids), rtol=0, atol=1e-5)
    for site in sites[:2]:  # the pass itself is the same program up to the head
        np.testing.assert_array_equal(racts[site], acts[site])
    np.testing.assert_array_equal(racts["logits"], got)


def test_reading_every_id_gives_the_exact_top_k(setup):
    params, mel, _, tokens, _ = setup
    full, _ = jai.forward(params, mel, tokens, dims=DIMS)
    every = jnp.broadcast_to(jnp.arange(DIMS.n_vocab), (N_TOKENS, DIMS.n_vocab))
    got, _ = jai.forward(params, mel, tokens, dims=DIMS, readout=every)
    np.testing.assert_allclose(got, full, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(jax.lax.top_k(got, 5)[1], jax.lax.top_k(full, 5)[1])


def test_readout_under_jit_and_vmap(setup):
    params, mel, _, tokens, ids = setup
    feats, _ = jai.encode(params, mel, dims=DIMS)
    batch_t, batch_ids = jnp.stack([tokens, tokens[::-1]]), jnp.stack([ids, ids[::-1]])
    run = jax.jit(jax.vmap(lambda t, i: jai.decode(params, t, feats, dims=DIMS, readout=i)[0]))
    full = jax.vmap(lambda t: jai.decode(params, t, feats, dims=DIMS)[0])(batch_t)
    np.testing.assert_allclose(run(batch_t, batch_ids), gathered(full, batch_ids), rtol=0, atol=1e-5)


def test_cached_decoding_step_reads_out_too(setup):
    params, mel, _, tokens, ids = setup
    feats, _ = jai.encode(params, mel, dims=DIMS)
    cache = jai.init_cache(params, feats, dims=DIMS)
    full, _, _ = jai.decode(params, tokens[:3], None, dims=DIMS, cache=cache)
    got, _, _ = jai.decode(params, tokens[:3], None, dims=DIMS, cache=cache, readout=ids[:3])
    np.testing.assert_allclose(got, gathered(full, ids[:3]), rtol=0, atol=1e-5)


def _sweeps(params, mel, noise, tokens):
    """The (layer, head, alpha) cross-attention head sweep written through the public contract
    twice: full logits of full passes (then gathered), and the fast way (each layer resumed
    from its clean residual, cross k/v once, only the clean tokens read out)."""
    site, n_layer, n_head = "decoder.cross_attn.z", DIMS.n_text_layer, DIMS.n_text_head
    feats, _ = jai.encode(params, mel, dims=DIMS)
    _, ref = jai.forward(params, noise, tokens, dims=DIMS, capture=[site])
    _, clean = jai.decode(params, tokens, feats, dims=DIMS, capture=["decoder.resid_pre"])
    cross = cross_kv_stack(params, feats, dims=DIMS)
    ids = jnp.roll(tokens, -1)[:, None]  # [T, 1]: the next clean token at each position

    def edit(layer, head, alpha):
        return {site: jai.interpolate(ref[site], alpha, layers=[layer], heads=head)}

    @jax.jit
    def slow():
        def one(layer, head, alpha):
            logits, _ = jai.forward(params, mel, tokens, dims=DIMS, edits=edit(layer, head, alpha))
            return gathered(logits, ids)[:-1, 0]
        grid = jax.vmap(jax.vmap(one, (None, None, 0)), (None, 0, None))
        return jax.vmap(grid, (0, None, None))(jnp.arange(n_layer), jnp.arange(n_head), ALPHAS)

    @jax.jit
    def fast():
        out = []
        for layer in range(n_layer):  # static: each layer resumes from its own clean residual
            def one(head, alpha, layer=layer):
                logits, _ = jai.decode(params, clean["decoder.resid_pre"][layer], None, dims=DIMS,
                                       start_layer=layer, cross=cross, edits=edit(layer, head, alpha),
                                       readout=ids)
                return logits[:-1, 0]
            out.append(jax.vmap(jax.vmap(one, (None, 0)), (0, None))(jnp.arange(n_head), ALPHAS))
        return jnp.stack(out)

    return slow(), fast(), head_sweep(params, tokens, feats, ref[site], ALPHAS, dims=DIMS)[0]


def test_a_readout_sweep_equals_the_full_logits_sweep(setup):
    params, mel, noise, tokens, _ = setup
    slow, fast, builtin = _sweeps(params, mel, noise, tokens)
    assert fast.shape == (DIMS.n_text_layer, DIMS.n_text_head, len(ALPHAS), N_TOKENS - 1)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast, builtin, rtol=0, atol=1e-5)
    assert float(jnp.abs(slow - slow[:, :, :1]).max()) > 1e-3  # the patches do change the logits


def test_a_vmapped_readout_sweep_has_no_vocabulary_wide_product(setup):
    params, mel, _, tokens, ids = setup
    feats, _ = jai.encode(params, mel, dims=DIMS)

    def sweep(alphas, readout):
        return jax.vmap(lambda a: jai.decode(params, tokens, feats, dims=DIMS, readout=readout,
                                             edits={"decoder.mlp_out": jai.zero(alpha=a)})[0])(alphas)

    def dots(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn.outvars[0].aval.shape
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, (ClosedJaxpr, Jaxpr)):
                        yield from dots(getattr(sub, "jaxpr", sub))

    def vocab_dots(readout):
        return [s for s in dots(jax.make_jaxpr(sweep)(ALPHAS, readout).jaxpr) if DIMS.n_vocab in s]

    assert vocab_dots(ids) == []
    assert vocab_dots(None)  # the check does see the full projection when it is there


@pytest.mark.parametrize("readout, match", [
    (np.zeros((N_TOKENS,), np.int32), r"\[T, k\] with T = 11 positions, got shape \(11,\)"),
    (np.zeros((N_TOKENS - 1, 2), np.int32), r"got shape \(10, 2\)"),
    (np.zeros((N_TOKENS, 2), np.float32), "integer token ids"),
    (np.full((N_TOKENS, 2), DIMS.n_vocab), r"must lie in \[0, 97\)"),
])
def test_bad_readouts_are_one_line_errors(setup, readout, match):
    params, mel, _, tokens, _ = setup
    for call in (lambda: jai.forward(params, mel, tokens, dims=DIMS, readout=readout),
                 lambda: jai.decode(params, tokens, None, dims=DIMS, readout=readout)):
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


def test_the_logits_site_cannot_be_edited_with_a_readout(setup):
    params, mel, _, tokens, ids = setup
    with pytest.raises(ValueError, match="'logits' cannot be edited with readout="):
        jai.forward(params, mel, tokens, dims=DIMS, readout=ids,
                    edits={"logits": jai.add(jnp.ones((1, DIMS.n_vocab)))})


def test_qwen2_audio_reads_out_the_same_values():
    from jaxasr_interp import qwen2_audio as qa
    from qwen_ref import AUDIO_TOKEN_ID
    from qwen_ref import params_of as qwen_params_of
    from qwen_ref import random_model
    dims = qa.QwenAudioDims(n_mels=13, n_audio_ctx=25, n_audio_state=34, n_audio_head=2,
                            n_audio_layer=2, n_vocab=101, n_text_state=42, n_text_head=3,
                            n_kv_head=1, n_text_layer=3, n_text_ffn=67, n_text_ctx=96,
                            audio_token_id=AUDIO_TOKEN_ID, rope_theta=1000.0, rms_eps=1e-6)
    params = jax.tree_util.tree_map(jnp.asarray, qwen_params_of(random_model(dims, seed=3), dims))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(10, dims.n_vocab, 9), jnp.int32)
    ids = jnp.asarray(rng.integers(0, dims.n_vocab, (9, 3)), jnp.int32)
    full, acts = qa.decode(params, tokens, None, dims=dims, capture=["decoder.ln_final"])
    got, racts = qa.decode(params, tokens, None, dims=dims, readout=ids, capture=["decoder.ln_final"])
    np.testing.assert_allclose(got, gathered(full, ids), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(racts["decoder.ln_final"], acts["decoder.ln_final"])
    with pytest.raises(ValueError, match="readout must be token ids"):
        qa.decode(params, tokens, None, dims=dims, readout=ids[:3])
