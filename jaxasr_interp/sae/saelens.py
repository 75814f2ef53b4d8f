"""The SAELens format: ``cfg.json`` + ``sae_weights.safetensors``.

The weights are ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec
[d_in]`` (plus ``threshold [d_sae]`` for ``jumprelu``), float32: our params under the same
names. ``cfg.json`` follows SAELens 6 (``SAE.load_from_disk(dir)`` reads it; checked against
sae-lens 6.54 by tests/test_sae_saelens.py):

=============  ==================================================================
our kind       SAELens ``architecture``
=============  ==================================================================
``topk``       ``topk`` with ``k`` and ``rescale_acts_by_decoder_norm: false``
``relu``       ``standard`` (ReLU)
``batchtopk``  ``jumprelu`` at the learned global threshold, as SAELens saves BatchTopK
``jumprelu``   ``jumprelu``
=============  ==================================================================

Written with ``apply_b_dec_to_input: true`` (SAELens subtracts ``b_dec`` before encoding, as
we do), ``normalize_activations: "none"`` (our params already work on raw activations) and
``reshape_activations: "none"`` (head sites such as ``attn.z`` are stored and encoded flattened
to ``H * dh``). ``metadata.hook_name`` is ``"{stack}.blocks.{layer}.{site}"`` (e.g.
``encoder.blocks.3.resid_post``), and ``metadata.jaxasr_interp`` keeps our config whole.

Reading also accepts what SAELens writes with other settings, folded into our form exactly:
``apply_b_dec_to_input: false`` (``b_enc += b_dec @ W_enc``), TopK's
``rescale_acts_by_decoder_norm: true`` (decoder row norms folded into the encoder), and
pre-6.0 configs (``activation_fn: "topk"`` with ``activation_fn_kwargs.k``). Activation
normalisation other than ``"none"`` and other architectures are refused with the reason.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np

from jaxasr_interp.sae.metrics import as_pair
from jaxasr_interp.sae.model import SAEConfig
from jaxasr_interp.sae.train import TrainedSAE

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
# The SAELens config format written here (its loader reads pre-6.0 files differently).
FORMAT_VERSION = "6.0.0"
ARCHITECTURES = {"topk": "topk", "relu": "standard", "batchtopk": "jumprelu", "jumprelu": "jumprelu"}
KINDS = {"topk": "topk", "standard": "relu", "jumprelu": "jumprelu"}


def hook_name(site: str, layer: int) -> str:
    stack, local = site.split(".", 1)
    return f"{stack}.blocks.{layer}.{local}"


def _site_layer(name: str | None) -> tuple[str, int]:
    found = re.fullmatch(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)", name or "")
    return (f"{found[1]}.{found[3]}", int(found[2])) if found else ("", 0)


def save_saelens(directory, sae, *, model_name: str = "") -> Path:
    """Write ``sae`` (a :class:`~.train.TrainedSAE` or ``(params, config)``) as SAELens."""
    from safetensors.numpy import save_file
    params, cfg = as_pair(sae)
    arch = ARCHITECTURES[cfg.kind]
    names = ("W_enc", "W_dec", "b_enc", "b_dec") + (("threshold",) if arch == "jumprelu" else ())
    tensors = {n: np.ascontiguousarray(np.asarray(params[n], np.float32)) for n in names}
    conf = dict(architecture=arch, d_in=cfg.d_in, d_sae=cfg.d_sae, dtype="float32", device="cpu",
                apply_b_dec_to_input=True, normalize_activations="none", reshape_activations="none",
                metadata=dict(sae_lens_version=FORMAT_VERSION, sae_lens_training_version=None,
                              model_name=model_name, hook_name=hook_name(cfg.site, cfg.layer) if cfg.site else None,
                              hook_head_index=None, jaxasr_interp=dataclasses.asdict(cfg)))
    if arch == "topk":
        conf.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    directory = Path(directory).expanduser().absolute()
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS))
    (directory / CFG).write_text(json.dumps(conf, indent=1) + "\n")
    return directory


def _architecture(conf: dict) -> tuple[str, int | None]:
    """(our kind, k) of a SAELens config, old or new."""
    arch, k = conf.get("architecture", "standard"), conf.get("k")
    fn = conf.get("activation_fn", conf.get("activation_fn_str"))
    if arch == "standard" and fn == "topk":  # before 6.0: TopK was a standard SAE's activation
        arch, k = "topk", (conf.get("activation_fn_kwargs") or {}).get("k")
    if arch not in KINDS:
        raise ValueError(f"SAELens architecture {arch!r} is not supported; supported: {sorted(KINDS)}")
    return KINDS[arch], k


def load_saelens(directory) -> TrainedSAE:
    """An SAE in SAELens format (``cfg.json`` + ``sae_weights.safetensors``), as ours."""
    from safetensors.numpy import load_file
    directory = Path(directory).expanduser().absolute()
    if not (directory / CFG).is_file() or not (directory / WEIGHTS).is_file():
        raise FileNotFoundError(f"{directory}: not a SAELens SAE ({CFG} and {WEIGHTS} expected)")
    conf = json.loads((directory / CFG).read_text())
    kind, k = _architecture(conf)
    if conf.get("normalize_activations", "none") not in ("none", None):
        raise ValueError(f"{directory}: normalize_activations={conf['normalize_activations']!r} is not "
                         "supported; fold the normalisation into the weights first")
    w = {n: np.asarray(a, np.float32) for n, a in load_file(str(directory / WEIGHTS)).items()}
    if "scaling_factor" in w and not np.allclose(w.pop("scaling_factor"), 1.0):
        raise ValueError(f"{directory}: a finetuning scaling factor is not supported")
    params = {n: w[n] for n in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if kind == "jumprelu":
        params["threshold"] = w["threshold"]
    if not conf.get("apply_b_dec_to_input", True):
        params["b_enc"] = params["b_enc"] + params["b_dec"] @ params["W_enc"]
    if kind == "topk" and conf.get("rescale_acts_by_decoder_norm", False):
        norms = np.linalg.norm(params["W_dec"], axis=-1)
        params.update(W_enc=params["W_enc"] * norms, b_enc=params["b_enc"] * norms,
                      W_dec=params["W_dec"] / norms[:, None])
    meta = conf.get("metadata") or {}
    site, layer = _site_layer(meta.get("hook_name", conf.get("hook_name")))
    ours = meta.get("jaxasr_interp") or {}
    cfg = SAEConfig(**{**ours, "d_in": int(conf["d_in"]), "d_sae": int(conf["d_sae"]), "kind": kind,
                       "k": int(k) if k is not None else ours.get("k", 32),
                       "site": ours.get("site", site), "layer": ours.get("layer", layer)})
    if ours.get("kind") == "batchtopk":  # our BatchTopK, saved as its inference JumpReLU
        cfg = dataclasses.replace(cfg, kind="batchtopk")
    return TrainedSAE(cfg, params, 1.0, {})
