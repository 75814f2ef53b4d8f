"""SAE files: the orbax round trip is exact; sae-lens loads the SAELens files we write and its
encodings equal ours; we load the files sae-lens writes, and encode as it does."""

import dataclasses

import numpy as np
import pytest

from jaxasr_interp.sae import model as M
from jaxasr_interp.sae.io import load_sae, save_sae
from jaxasr_interp.sae.saelens import load_saelens, save_saelens
from jaxasr_interp.sae.train import TrainedSAE

D, F = 13, 37


def _sae(kind, seed=0, **kw):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((F, D)).astype(np.float32)
    params = {"W_enc": rng.standard_normal((D, F)).astype(np.float32), "b_enc": 0.1 * rng.standard_normal(F).astype(np.float32),
              "W_dec": w / np.linalg.norm(w, axis=1, keepdims=True), "b_dec": rng.standard_normal(D).astype(np.float32)}
    if kind in ("batchtopk", "jumprelu"):
        params["threshold"] = np.full(F, 0.3, np.float32)
    cfg = M.SAEConfig(D, F, kind, k=5, site="encoder.resid_post", layer=3, **kw)
    return TrainedSAE(cfg, params, 1.7, {"step": np.arange(3), "nmse": np.array([0.5, 0.3, 0.2])})


def _x(seed=1, n=19):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32) * 2


def test_orbax_round_trip_is_exact(tmp_path):
    for kind in ("topk", "batchtopk", "relu"):
        sae = _sae(kind, l1=0.01, lr=1e-3)
        back = load_sae(save_sae(tmp_path / kind, sae))
        assert back.config == sae.config and back.scale == sae.scale
        assert set(back.params) == set(sae.params)
        for name, value in sae.params.items():
            np.testing.assert_array_equal(back.params[name], value)
        np.testing.assert_array_equal(back.history["nmse"], sae.history["nmse"])


def test_saelens_round_trip_through_our_reader(tmp_path):
    for kind in ("topk", "batchtopk", "relu"):
        sae = _sae(kind)
        back = load_saelens(save_saelens(tmp_path / kind, sae, model_name="tiny.en"))
        assert dataclasses.replace(back.config, lr=None) == dataclasses.replace(sae.config, lr=None)
        np.testing.assert_array_equal(np.asarray(M.encode(back.params, _x(), back.config)),
                                      np.asarray(M.encode(sae.params, _x(), sae.config)))


@pytest.fixture(scope="module")
def sae_lens():
    return pytest.importorskip("sae_lens")


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu"])
def test_sae_lens_loads_our_files_and_encodes_as_we_do(tmp_path, sae_lens, kind):
    import torch
    sae = _sae(kind)
    loaded = sae_lens.SAE.load_from_disk(save_saelens(tmp_path / kind, sae, model_name="tiny.en"))
    assert loaded.cfg.architecture() == {"topk": "topk", "batchtopk": "jumprelu", "relu": "standard"}[kind]
    assert loaded.cfg.metadata.hook_name == "encoder.blocks.3.resid_post"
    with torch.no_grad():
        theirs = loaded.encode(torch.from_numpy(_x())).numpy()
        recon = loaded.decode(torch.from_numpy(theirs)).numpy()
    ours = np.asarray(M.encode(sae.params, _x(), sae.config))
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(recon, np.asarray(M.decode(sae.params, ours)), rtol=1e-5, atol=1e-5)
    if kind == "topk":
        assert loaded.cfg.k == 5


@pytest.mark.parametrize("arch", ["topk", "standard", "jumprelu", "topk-rescaled"])
def test_we_load_what_sae_lens_writes(tmp_path, sae_lens, arch):
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    common = dict(d_in=D, d_sae=F, apply_b_dec_to_input=arch != "standard")
    sae = {"topk": lambda: TopKSAE(TopKSAEConfig(k=4, **common)),
           "topk-rescaled": lambda: TopKSAE(TopKSAEConfig(k=4, rescale_acts_by_decoder_norm=True, **common)),
           "standard": lambda: StandardSAE(StandardSAEConfig(**common)),
           "jumprelu": lambda: JumpReLUSAE(JumpReLUSAEConfig(**common))}[arch]()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in sae.parameters():  # SAELens initialises biases to zero: make every weight count
            p.copy_(torch.randn_like(p) * (0.2 if p.ndim == 1 else 1.0) + (0.1 if p.ndim == 1 else 0.0))
    sae.save_model(tmp_path / arch)
    ours = load_saelens(tmp_path / arch)
    with torch.no_grad():
        want = sae.encode(torch.from_numpy(_x())).numpy()
        want_recon = sae.decode(torch.from_numpy(want)).numpy()
    got = np.asarray(M.encode(ours.params, _x(), ours.config))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(M.decode(ours.params, got)), want_recon, rtol=1e-4, atol=1e-4)
