"""Tuned lenses on a random prime-sized config: the identity translator is the plain lens
(decoder logit lens and encoder-lens greedy tokens), training lowers the loss of both kinds
and makes the tuned decoder lens agree better with the final layer, and orbax round-trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxasr_interp as jai
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.lenses.encoder import lens_features
from jaxasr_interp.core.layers import layer_norm
from jaxasr_interp.lenses.logit import logit_lens
from jaxasr_interp.lenses.tuned import fit_translators, identity_translator, load_translators, save_translators, translate
from torch_ref import params_of, random_torch_model

# the config of test_lens.py: the plain lens's compiled programs are shared within a session
DIMS = Dims(n_mels=80, n_audio_ctx=23, n_audio_state=70, n_audio_head=5, n_audio_layer=3,
            n_vocab=97, n_text_ctx=19, n_text_state=70, n_text_head=5, n_text_layer=3)


@pytest.fixture(scope="module")
def case():
    torch_model = random_torch_model(DIMS, seed=5)
    params = jax.tree_util.tree_map(jnp.asarray, params_of(torch_model, DIMS))
    params["decoder"]["token_embedding"]["embedding"] = params["decoder"]["token_embedding"]["embedding"] * 12.0  # peaked outputs
    rng = np.random.default_rng(1)
    mels = rng.standard_normal((4, DIMS.n_mels, DIMS.n_samples_frames)).astype(np.float32)
    seqs = [rng.integers(0, DIMS.n_vocab, n).tolist() for n in (11, 9, 11, 10)]
    return jai.Model(params, DIMS, tokenizer=None), mels, seqs


def test_translate_is_an_affine_map_per_layer():
    rng = np.random.default_rng(0)
    tr = {"weight": rng.standard_normal((3, 5, 5)).astype(np.float32),
          "bias": rng.standard_normal((3, 5)).astype(np.float32)}
    h = rng.standard_normal((3, 4, 5)).astype(np.float32)
    want = np.stack([h[l] + h[l] @ tr["weight"][l] + tr["bias"][l] for l in range(3)])
    np.testing.assert_allclose(np.asarray(translate(tr, h)), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(translate(identity_translator(3, 5), h)), h)


def test_identity_tuned_lens_equals_plain_lens(case):
    model, mels, seqs = case
    tokens = jnp.asarray(seqs[0], jnp.int32)
    plain = logit_lens(model, mels[0], tokens)
    tuned = logit_lens(model, mels[0], tokens, translator=identity_translator(3, DIMS.n_text_state))
    assert tuned.sites == ("resid_post",)
    for field in ("top_ids", "top_probs", "final_prob", "final_rank", "kl"):
        np.testing.assert_allclose(tuned.site("resid_post")[field], plain.site("resid_post")[field], atol=1e-6)
    np.testing.assert_array_equal(tuned.saturation, plain.saturation)
    # encoder lens: the decoder is given exactly the plain lens's features for every layer
    tr = identity_translator(DIMS.n_audio_layer, DIMS.n_audio_state)
    mel = jnp.asarray(mels[0])
    for ln_post in (True, False):
        plain_f = lens_features(model.params, mel, dims=DIMS, ln_post=ln_post)
        tuned_f = lens_features(model.params, mel, tr, dims=DIMS, ln_post=ln_post)
        # (a tuned lens adds one row: the real encoder output, its default reference)
        np.testing.assert_array_equal(np.asarray(tuned_f[:3]), np.asarray(plain_f[:3]))
    out, acts = jai.encode(model.params, mel, dims=DIMS, capture=["encoder.resid_post"])
    want = layer_norm(acts["encoder.resid_post"], model.params["encoder"]["ln_post"])
    got = lens_features(model.params, mel, tr, dims=DIMS)
    assert got.shape == (4, DIMS.n_audio_ctx, DIMS.n_audio_state)
    np.testing.assert_allclose(np.asarray(got[:3]), np.asarray(want), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(got[3]), np.asarray(out))


def test_training_lowers_the_loss_and_round_trips(case, tmp_path):
    model, mels, seqs = case
    trained, losses = fit_translators(model.params, DIMS, mels, seqs, steps=30, lr=3e-3)
    for kind in ("decoder", "encoder"):
        assert losses[kind].shape == (31,)
        assert losses[kind][0] > 1e-3  # the plain lens is off the final distribution here
        assert losses[kind][-1] < 0.3 * losses[kind][0], (kind, losses[kind][[0, -1]])
    # on the training utterances the tuned decoder lens puts more probability on the final token
    tokens = jnp.asarray(seqs[0], jnp.int32)
    plain = logit_lens(model, mels[0], tokens, sites=("resid_post",))
    tuned = logit_lens(model, mels[0], tokens, translator=trained["decoder"])
    assert tuned.kl[0, :-1].mean() < plain.kl[0, :-1].mean()
    # the plain lens's last layer is the model's own output (KL 0); training the last
    # translator towards a target it already meets keeps it there (measured 4e-4 nats, against
    # 0.55 nats for the plain lens at layer 0)
    np.testing.assert_allclose(plain.kl[0, -1], 0.0, atol=1e-5)
    assert 0.0 <= tuned.kl[0, -1].mean() < 0.02 * plain.kl[0, 0].mean()
    save_translators(trained, tmp_path / "tl")
    loaded = load_translators(tmp_path / "tl")
    for kind in trained:
        for name in ("weight", "bias"):
            np.testing.assert_array_equal(np.asarray(loaded[kind][name]), np.asarray(trained[kind][name]))
    with pytest.raises(FileNotFoundError):
        load_translators(tmp_path / "missing")
