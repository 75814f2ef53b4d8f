"""SAEs: the TopK forward against NumPy; the sparse decoder's gradient against the dense one;
decoder rows stay unit norm; training several SAEs in one vmap equals training each alone;
FVU falls and planted directions are recovered; AuxK revives dead latents."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxasr_interp.sae import model as M
from jaxasr_interp.sae.metrics import evaluate
from jaxasr_interp.sae.synthetic import batches, planted_activations
from jaxasr_interp.sae.train import train_saes

D, F, N_FEAT = 29, 53, 37  # prime-sized


def _random_params(seed=0, d=D, f=F):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((f, d)).astype(np.float32)
    return {"W_enc": rng.standard_normal((d, f)).astype(np.float32), "b_enc": rng.standard_normal(f).astype(np.float32),
            "W_dec": w / np.linalg.norm(w, axis=1, keepdims=True), "b_dec": rng.standard_normal(d).astype(np.float32)}


def test_topk_forward_matches_numpy():
    p, k = _random_params(), 5
    x = np.random.default_rng(1).standard_normal((11, D)).astype(np.float32)
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    z = np.zeros_like(pre)
    for r in range(len(x)):
        top = np.argsort(-pre[r])[:k]
        z[r, top] = np.maximum(pre[r, top], 0)
    cfg = M.SAEConfig(D, F, "topk", k=k)
    np.testing.assert_allclose(np.asarray(M.encode(p, x, cfg)), z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(M.reconstruct(p, x, cfg)), z @ p["W_dec"] + p["b_dec"], rtol=1e-4, atol=1e-4)
    # a traced k below the static k_max keeps only the top k
    vals, idx = M.topk_latents(jnp.asarray(pre), 3, k)
    assert int((np.asarray(vals) > 0).sum(-1).max()) <= 3


@pytest.mark.parametrize("k", [4, 2])
def test_sparse_decoder_gradient_equals_dense(k):
    """topk_decode (custom backward, a traced k below k_max = 4) against autodiff of the dense
    formulation, the AuxK form (-inf where masked) included."""
    p = _random_params(2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((13, D)), jnp.float32)
    mask = jnp.arange(F) % 3 > 0

    def loss(params, sparse, masked):
        pre = M.pre_acts(params, x)
        pre = jnp.where(mask, pre, -jnp.inf) if masked else pre
        if sparse:
            x_hat = M.topk_decode(pre, params["W_dec"], jnp.int32(k), 4)[0] + params["b_dec"]
        else:
            vals, idx = jax.lax.top_k(pre, 4)
            vals = jnp.where(jnp.arange(4) < k, jax.nn.relu(vals), 0.0)
            x_hat = M.decode(params, M.densify(vals, idx, F))
        return M.nmse(x, x_hat)

    for masked in (False, True):
        gs, gd = jax.grad(loss)(p, True, masked), jax.grad(loss)(p, False, masked)
        for name in p:
            np.testing.assert_allclose(np.asarray(gs[name]), np.asarray(gd[name]), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def planted():
    return planted_activations(8192, D, N_FEAT, 3.0, layers=2, seed=0)


def test_several_saes_in_one_vmap_equal_each_alone(planted):
    x, _ = planted
    configs = [M.SAEConfig(D, F, "topk", k=3, layer=0, seed=1, lr=3e-3),
               M.SAEConfig(D, F, "topk", k=5, layer=1, seed=2, lr=1e-3),
               M.SAEConfig(D, 2 * F, "topk", k=4, layer=1, seed=3, lr=3e-3)]
    kw = dict(steps=30, dead_after=256, log_every=10)
    together = train_saes(batches(x, 64, seed=4), configs, **kw)
    for cfg, joint in zip(configs, together):
        alone = train_saes(batches(x, 64, seed=4), [cfg], **kw)[0]
        for name in joint.params:
            np.testing.assert_allclose(joint.params[name], alone.params[name], rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(joint.history["nmse"], alone.history["nmse"], rtol=1e-4)
        np.testing.assert_allclose(np.linalg.norm(joint.params["W_dec"], axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind,extra", [("topk", dict(k=3)), ("batchtopk", dict(k=3)), ("relu", dict(l1=0.1))])
def test_fvu_falls_and_planted_directions_are_recovered(planted, kind, extra):
    x, directions = planted
    cfg = M.SAEConfig(D, 2 * N_FEAT, kind, lr=4e-3, **extra)
    sae = train_saes(batches(x[:1], 128, seed=0), [cfg], steps=250, dead_after=4096, log_every=50)[0]
    assert sae.history["nmse"][-1] < 0.5 * sae.history["nmse"][0]
    np.testing.assert_allclose(np.linalg.norm(sae.params["W_dec"], axis=1), 1.0, atol=1e-5)
    quality = evaluate([sae], batches(x[:1], 1024, epochs=1))[0]
    assert quality["fvu"] < 0.25 and 0 <= quality["dead"] <= 1
    best = np.abs(sae.params["W_dec"] @ directions.T).max(0)
    if kind == "topk":  # finds the planted features (BatchTopK gets ~70% in these few steps)
        assert np.mean(best > 0.9) >= 0.9, np.sort(best)
    if kind != "relu":  # BatchTopK's inference threshold keeps about k latents per row
        assert abs(quality["l0"] - 3) < 1.0, quality["l0"]


def test_auxk_revives_dead_latents():
    """A constructed start: latents 0..9 get an encoder column too weak to ever reach the top
    k (the live latents 10..15 start with b_enc = 1), so no main-loss gradient reaches them and
    without AuxK they stay dead; with AuxK their small positive pre-activations are trained on
    the residual and they come back."""
    d, f = 29, 16
    x, _ = planted_activations(8192, d, 8, 2.0, seed=0)
    start = {k: np.array(v) for k, v in M.init_params(jax.random.PRNGKey(0), d, f).items()}
    start["W_enc"][:, :10] *= 1e-3
    start["b_enc"][10:] = 1.0
    start["b_dec"] = x[0].mean(0)
    freq, fvu = {}, {}
    for coeff in (0.0, 1 / 32):
        cfg = M.SAEConfig(d, f, "topk", k=1, lr=1e-2, aux_coeff=coeff)
        sae = train_saes(batches(x, 128, seed=0), [cfg], steps=150, dead_after=512, log_every=50,
                         initial=[start])[0]
        quality = evaluate([sae], batches(x, 1024, epochs=1))[0]
        freq[coeff], fvu[coeff] = quality["freq"][:10], quality["fvu"]
    assert np.all(freq[0.0] == 0)
    assert np.sum(freq[1 / 32] > 0) >= 7, freq[1 / 32]
    assert fvu[1 / 32] < fvu[0.0]
