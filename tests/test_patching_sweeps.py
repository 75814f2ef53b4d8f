"""Component sweeps: one compiled sweep per family equals the single patches it stands for;
patching a run with itself changes nothing; a full encoder-block patch is the reference run;
zero ablation; decoding sweeps give the argmax of each edited teacher-forced pass.

Compilation is what these tests spend their time on, so every single-patch check goes through
one compiled forward (:func:`run`): each patched site always carries an edit, all but the
patched one with weight 0 (alpha = 0 is an exact identity, see test_edits.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxasr_interp.core.edits import interpolate
from jaxasr_interp.whisper.model import forward
from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep, family_of, readout, reference_for, single_patch_edits
from jaxasr_interp.patching.decoding import decode_sweep
from test_model_parity import CONFIGS
from torch_ref import params_of, random_torch_model

DIMS, N_TOKENS = CONFIGS["base-like"]
ALPHAS = jnp.array([0.0, 0.5, 1.0])
# Every family, each against single patches through one compiled forward that carries all of
# their sites (both code paths: encoder resume + full decoder; decoder resume with shared
# cross-attention K/V; both kinds of patch: whole layer, single head).
SWEPT = tuple(FAMILIES)
PATCHED = tuple(FAMILIES.values())
TOL = 1e-4


def run(params, mel, tokens, contrast, patch=None):
    """(readout dict, logits, acts) of one forward pass with at most one patch in effect."""
    edits = {}
    for site in PATCHED:
        heads = DIMS.n_audio_head if site.startswith("encoder") else DIMS.n_text_head
        mask = jnp.zeros((DIMS.n_audio_layer if site.startswith("encoder") else DIMS.n_text_layer, 1)
                         + ((heads,) if site.endswith(".z") else ()))
        edits[site] = interpolate(reference_for("zero", None, site, DIMS, N_TOKENS), 1.0, mask=mask)
    edits.update(patch or {})
    logits, acts = forward(params, mel, tokens, dims=DIMS, edits=edits,
                           capture=PATCHED + ("encoder.ln_post", "decoder.ln_final"))
    out = {k: np.asarray(v) for k, v in readout(acts["decoder.ln_final"], params, tokens, contrast).items()}
    return out, np.asarray(logits), acts


def make_setup(seed=5):
    params = jax.tree_util.tree_map(jnp.asarray, params_of(random_torch_model(DIMS, seed=seed), DIMS))
    rng = np.random.default_rng(3)
    mel, noise = (jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
                  for _ in range(2))
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, N_TOKENS), jnp.int32)
    contrast = jnp.asarray(rng.integers(0, DIMS.n_vocab, N_TOKENS - 1), jnp.int32)
    return params, mel, noise, tokens, contrast


@pytest.fixture(scope="module")
def setup():
    params, mel, noise, tokens, contrast = make_setup()
    _, _, ref = run(params, noise, tokens, contrast)
    _, _, self_acts = run(params, mel, tokens, contrast)
    sweeps = {f: component_sweep(params, mel, tokens, ref[FAMILIES[f]], ALPHAS, contrast, dims=DIMS, family=f)
              for f in SWEPT}
    return params, mel, noise, tokens, contrast, ref, self_acts, sweeps


@pytest.mark.parametrize("family", SWEPT)
def test_sweep_equals_single_patches(setup, family):
    params, mel, _, tokens, contrast, ref, _, sweeps = setup
    patched, clean = sweeps[family]
    n_layer = DIMS.n_audio_layer if family.startswith("encoder") else DIMS.n_text_layer
    n_patch = patched["logit"].shape[1]
    assert patched["logit"].shape == (n_layer, n_patch, len(ALPHAS), N_TOKENS - 1)
    plain, _, _ = run(params, mel, tokens, contrast)
    for key in ("logit", "logprob", "contrast_logit"):
        np.testing.assert_allclose(np.asarray(clean[key]), plain[key], rtol=0, atol=TOL)
        np.testing.assert_allclose(np.asarray(patched[key][:, :, 0]),  # alpha = 0 is the clean run
                                   np.broadcast_to(plain[key], patched[key][:, :, 0].shape), rtol=0, atol=TOL)
    for layer, p, a in ((0, 0, 2), (n_layer - 1, n_patch - 1, 1), (1, n_patch // 2, 2)):
        head = p if n_patch > 1 else None
        want, _, _ = run(params, mel, tokens, contrast, single_patch_edits(
            family, ref[FAMILIES[family]], layer, float(ALPHAS[a]), dims=DIMS, head=head))
        for key in ("logit", "logprob", "contrast_logit"):
            np.testing.assert_allclose(np.asarray(patched[key][layer, p, a]), want[key], rtol=0, atol=TOL)
        assert np.array_equal(np.asarray(patched["top"][layer, p, a]), want["top"])
    moved = np.abs(np.asarray(patched["logit"][:, :, 2] - clean["logit"])).max()
    assert moved > 5 * TOL, f"the {family} patches do not act ({moved})"  # logits here are ~0.1


@pytest.mark.parametrize("family", SWEPT)
def test_patching_a_run_with_itself_changes_nothing(setup, family):
    params, mel, _, tokens, contrast, _, self_acts, _ = setup
    patched, clean = component_sweep(params, mel, tokens, self_acts[FAMILIES[family]], ALPHAS, contrast,
                                     dims=DIMS, family=family)
    for key in ("logit", "logprob", "contrast_logit"):
        got = np.asarray(patched[key])
        np.testing.assert_allclose(got, np.broadcast_to(np.asarray(clean[key]), got.shape), rtol=0, atol=TOL)


def test_full_encoder_block_patch_is_the_reference_run(setup):
    params, mel, noise, tokens, contrast, ref, _, sweeps = setup
    patched, _ = sweeps["encoder.block"]
    want, ref_logits, _ = run(params, noise, tokens, contrast)
    for key in ("logit", "logprob", "contrast_logit"):  # every layer's alpha = 1 patch
        got = np.asarray(patched[key][:, 0, 2])
        np.testing.assert_allclose(got, np.broadcast_to(want[key], got.shape), rtol=0, atol=TOL)
    # and every block at once, through the plain forward: all logits equal the reference's
    all_blocks = {"encoder.resid_post": interpolate(ref["encoder.resid_post"], 1.0,
                                                    mask=jnp.ones((DIMS.n_audio_layer, 1)))}
    _, got, _ = run(params, mel, tokens, contrast, all_blocks)
    np.testing.assert_allclose(got, ref_logits, rtol=0, atol=TOL)
    assert np.abs(got - run(params, mel, tokens, contrast)[1]).max() > 1e-3  # and it differs from clean


def test_zero_ablation_sweep_equals_single_ablation(setup):
    params, mel, _, tokens, contrast, _, _, _ = setup
    family = "decoder.cross_head"  # zero ablation is interpolation towards zeros: no new program
    patched, _ = component_sweep(params, mel, tokens, None, ALPHAS, contrast, dims=DIMS, family=family, mode="zero")
    zeros = reference_for("zero", None, FAMILIES[family], DIMS, N_TOKENS)
    for layer, head in ((0, 0), (DIMS.n_text_layer - 1, 2)):
        want, _, _ = run(params, mel, tokens, contrast, single_patch_edits(family, zeros, layer, 1.0, dims=DIMS, head=head))
        np.testing.assert_allclose(np.asarray(patched["logprob"][layer, head, 2]), want["logprob"], rtol=0, atol=TOL)
    assert np.abs(np.asarray(patched["logprob"][:, :, 2] - patched["logprob"][:, :, 0])).max() > 1e-3


def test_unknown_family_names_the_valid_ones():
    assert family_of("decoder.cross_attn.z") == "decoder.cross_head"
    with pytest.raises(KeyError, match="did you mean decoder.cross_attn"):
        family_of("decoder.cross_atn")
    with pytest.raises(ValueError, match="needs the reference"):
        component_sweep(None, None, jnp.zeros(3, jnp.int32), None, ALPHAS, dims=DIMS, family="decoder.mlp")


def test_decode_sweep_tokens_are_the_argmax_of_each_edited_teacher_forced_pass(setup):
    params, mel, _, tokens, contrast, ref, self_acts, _ = setup
    features = self_acts["encoder.ln_post"]
    prompt, eot, n_new = tokens[:3], 1, N_TOKENS - 3  # prompt + ids: the length run() compiled for
    site_l, site_h = "decoder.cross_attn_out", "decoder.cross_attn.z"
    n_layer, n_head = DIMS.n_text_layer, DIMS.n_text_head
    # patch 0 is the identity; 1, 2: one layer; 3: one head; 4: a layer and a head together
    wl = jnp.zeros((5, n_layer, 1)).at[1, 0].set(1.0).at[2, 2].set(0.5).at[4, 1].set(1.0)
    wh = jnp.zeros((5, n_layer, 1, n_head)).at[3, 1, 0, 3].set(1.0).at[4, 2, 0, 0].set(1.0)
    refs = {s: 30 * ref[s] for s in (site_l, site_h)}  # scaled up so that the patches change the argmax
    got = np.asarray(decode_sweep(params, features, prompt, eot, refs, {site_l: wl, site_h: wh}, dims=DIMS,
                                  max_new_tokens=n_new, chunk=5))
    assert got.shape == (5, n_new)
    for p in range(5):
        seq = jnp.concatenate([prompt, jnp.asarray(got[p], jnp.int32)])
        patch = {s: interpolate(refs[s], 1.0, mask=w[p]) for s, w in ((site_l, wl), (site_h, wh))}
        _, logits, _ = run(params, mel, seq, contrast, patch)
        argmax = logits.argmax(-1)[len(prompt) - 1:-1]
        ended = np.flatnonzero(got[p] == eot)
        stop = int(ended[0]) + 1 if ended.size else n_new  # after end-of-text the ids are padding
        assert argmax[:stop].tolist() == got[p][:stop].tolist(), p
    assert any(got[p].tolist() != got[0].tolist() for p in range(1, 5))  # the patches do act
