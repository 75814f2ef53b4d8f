"""Using SAE latents as interventions: steer along a latent's decoder direction, or ablate it.

* **Steering** (:func:`steering_edit`): ``jai.add(sum_i alpha_i W_dec[i], layers=[layer])`` at
  the SAE's site, every position (the data is ``[1, 1, D]``, one row broadcast over layers'
  positions), for ``jai.transcribe(model, audio, edits={site: edit})``, ``jai.encode`` /
  ``jai.decode`` or greedy decoding (a decoder-site edit without a position axis acts on every
  generated token). ``alpha = 0`` is the identity. For a head site (``attn.z``, stored flattened
  to ``H * dh``) reshape the direction to ``[H, dh]`` and use ``jai.add`` directly.
* **Ablation** of latents (:func:`ablation_delta`): subtract their contribution ``z_i(a) W_dec[i]``
  from the activation ``a``, leaving the rest of ``a`` (the other latents *and* the SAE's
  reconstruction error) as it is. It is a fixed ``add`` computed from a clean capture, like
  :mod:`.splice`'s replace: an edit at layer ``l`` leaves layers ``0..l-1``, hence ``a_l`` and
  ``z(a_l)``, as in the clean run, so for one encoder layer the fixed edit *is* the functional
  ablation ``a - z_i(a) d_i``, exactly, and it goes through the jitted model unchanged (an edit's
  data is an array, not a function). For a decoder site during greedy decoding the activations
  depend on the generated prefix, so a fixed edit would be stale; :func:`edited_transcripts`
  takes encoder sites only.
* :func:`edited_transcripts` runs both per clip on its audio frames only (the padding frames of
  the 30 s window are left clean), and :func:`edited_transcripts_many` runs several conditions
  over the same clips. Per batch, one clean pass captures ``resid_pre`` and the site at the
  SAE's layer ``l``; every condition then resumes the encoder at block ``l`` from that capture
  (:func:`jaxasr_interp.encode_from`, bit-identical to the full pass) with its ``add`` edit,
  computed in the program from the capture (the SAE encoding for ablation), and decodes greedily
  (plain argmax, as ``jai.transcribe``). Blocks ``0..l-1`` run once per batch, not once per
  condition, and the latent sets and strengths are data, so every condition shares one
  compiled program. Conditions run one after another, not ``vmap``-ed: the batch's attention
  patterns (``[H, 1500, 1500]`` per clip and layer) times the conditions would not fit.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.edits import add
from jaxasr_interp.probes.features import audio_positions
from jaxasr_interp.sae import model as M
from jaxasr_interp.sae.inspect import encode_rows
from jaxasr_interp.sae.metrics import as_pair
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import encode, encode_from
from jaxasr_interp.whisper.tokenizer import cut_at_eot


def direction(sae, latent_ids: Sequence[int], alphas) -> np.ndarray:
    """``sum_i alpha_i W_dec[latent_i]`` ``[d_in]`` (the decoder rows have unit norm)."""
    params, _ = as_pair(sae)
    ids = np.atleast_1d(np.asarray(latent_ids))
    alphas = np.broadcast_to(np.asarray(alphas, np.float32), ids.shape)
    return (alphas[:, None] * np.asarray(params["W_dec"])[ids]).sum(0).astype(np.float32)


def steering_edit(sae, latent_ids, alphas, *, mask=None):
    """``jai.add`` of :func:`direction` at the SAE's layer, every position (``mask``: the
    edit's own mask, e.g. ``[1, T]`` for some positions); returns ``{site: edit}``."""
    _, cfg = as_pair(sae)
    vec = direction(sae, latent_ids, alphas)
    return {cfg.site: add(vec[None, None, :], layers=[cfg.layer], mask=mask)}


def ablation_delta(sae, acts, latent_ids) -> np.ndarray:
    """``-sum_i z_i(a_t) W_dec[i]`` ``[T, d_in]`` for clean activations ``acts [T, d_in]``:
    added to ``a`` it removes those latents' contribution (module docstring)."""
    params, cfg = as_pair(sae)
    ids = np.atleast_1d(np.asarray(latent_ids))
    z = encode_rows(params, np.asarray(acts, np.float32).reshape(len(acts), -1), cfg)[:, ids]
    return (-(z @ np.asarray(params["W_dec"])[ids])).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("dims", "site", "layer"))
def _capture(params, mels, *, dims, site, layer):
    """``resid_pre`` and ``site`` at ``layer`` of a batch, ``[B, S, ...]`` each."""
    def one(mel):
        acts = encode(params, mel, dims=dims, capture=("encoder.resid_pre", site))[1]
        return acts["encoder.resid_pre"][layer], acts[site][layer]
    return jax.vmap(one)(mels)


def _features(params, sae_params, resid, acts, n_valid, steer_vec, ablate_mask, *, dims, cfg, ablating):
    """One clip's audio features, the encoder resumed at block ``cfg.layer`` from its clean
    ``resid`` there, with ``steer_vec`` added and the latents of ``ablate_mask [d_sae]`` (0/1)
    removed at ``cfg.site`` on the audio frames (``acts``: the site's clean value)."""
    frames = (jnp.arange(dims.n_audio_ctx) < n_valid)[:, None]
    delta = frames * steer_vec
    if ablating:  # from the clean capture: exact for one layer (module docstring)
        z = M.encode(sae_params, acts.reshape(acts.shape[0], -1), cfg) * ablate_mask
        delta = delta - frames * (z @ sae_params["W_dec"])
    edits = {cfg.site: add(delta.reshape(acts.shape)[None], layers=[cfg.layer])}
    return encode_from(params, resid, start_layer=cfg.layer, dims=dims, edits=edits)[0]


@functools.partial(jax.jit, static_argnames=("dims", "cfg", "ablating"))
def _batch_features(params, sae_params, resid, acts, n_valid, steer_vec, ablate_mask, *, dims, cfg, ablating):
    one = functools.partial(_features, params, sae_params, dims=dims, cfg=cfg, ablating=ablating)
    return jax.vmap(one, in_axes=(0, 0, 0, None, None))(resid, acts, n_valid, steer_vec, ablate_mask)


@functools.partial(jax.jit, static_argnames=("dims", "cfg", "ablating", "max_new_tokens"))
def _edited(params, sae_params, resid, acts, n_valid, steer_vec, ablate_mask, prompt, eot, *, dims, cfg,
            ablating, max_new_tokens):
    af = _batch_features(params, sae_params, resid, acts, n_valid, steer_vec, ablate_mask, dims=dims, cfg=cfg,
                         ablating=ablating)
    bias = logit_bias(dims.n_vocab, ())
    return greedy_decode(params, af, prompt, eot, bias, bias, dims=dims, max_new_tokens=max_new_tokens)


def _condition(sae, steer, ablate) -> tuple:
    """``(steer_vec [d_in], ablate_mask [d_sae], ablating)`` of one condition."""
    _, cfg = as_pair(sae)
    steer_vec = np.zeros(cfg.d_in, np.float32) if steer is None else direction(sae, *steer)
    mask = np.zeros(cfg.d_sae, np.float32)
    if ablate is not None:
        mask[np.asarray(ablate, np.int64)] = 1.0
    return jnp.asarray(steer_vec), jnp.asarray(mask), bool(mask.any())


def _batches(model, audio, sae, batch_size):
    """Per batch (padded to ``batch_size``: one program): how many clips it holds, and its
    clean capture ``(resid, acts, n_valid)`` at the SAE's layer."""
    _, cfg = as_pair(sae)
    if not cfg.site.startswith("encoder."):
        raise ValueError(f"per-clip SAE edits take encoder sites, not {cfg.site!r}; steer a decoder "
                         "site with jai.transcribe(model, audio, edits=steering_edit(...))")
    dims, items = model.dims, list(audio)
    for b in range(0, len(items), batch_size):
        waves = [load_audio(a) for a in items[b:b + batch_size]]
        mels = [log_mel(w, n_mels=dims.n_mels) for w in waves]
        mels = jnp.stack(mels + [mels[-1]] * (batch_size - len(mels)))
        n_valid = [audio_positions(w.size, dims.n_audio_ctx) for w in waves]
        n_valid = jnp.asarray(n_valid + [n_valid[-1]] * (batch_size - len(n_valid)), jnp.int32)
        yield len(waves), (*_capture(model.params, mels, dims=dims, site=cfg.site, layer=cfg.layer), n_valid)


def edited_features(model, audio: Sequence, sae, *, steer: tuple | None = None,
                    ablate: Sequence[int] | None = None, batch_size: int = 8) -> np.ndarray:
    """The encoder outputs ``[n, n_audio_ctx, D]`` under the edits of :func:`edited_transcripts`."""
    params, cfg = as_pair(sae)
    sae_params = jax.tree_util.tree_map(jnp.asarray, params)
    steer_vec, mask, ablating = _condition(sae, steer, ablate)
    return np.concatenate([np.asarray(_batch_features(model.params, sae_params, *clean, steer_vec, mask,
                                                      dims=model.dims, cfg=cfg, ablating=ablating))[:n]
                           for n, clean in _batches(model, audio, sae, batch_size)])


def edited_transcripts_many(model, audio: Sequence, sae, conditions: Sequence[dict], *, batch_size: int = 8,
                            max_new_tokens: int | None = None) -> list[list[str]]:
    """Greedy transcripts of ``audio`` under each condition, ``{"steer": (latent_ids, alphas),
    "ablate": latent_ids}`` (either may be left out; ``{}`` is the clean run), one list per
    condition (module docstring)."""
    params, cfg = as_pair(sae)
    sae_params = jax.tree_util.tree_map(jnp.asarray, params)
    tok = model.tokenizer
    prompt = jnp.asarray(tok.prompt(), jnp.int32)
    max_new_tokens = max_new_tokens or model.dims.n_text_ctx // 2
    made = [_condition(sae, c.get("steer"), c.get("ablate")) for c in conditions]
    texts: list[list[str]] = [[] for _ in conditions]
    for n, clean in _batches(model, audio, sae, batch_size):
        for out, (steer_vec, mask, ablating) in zip(texts, made):
            ids = _edited(model.params, sae_params, *clean, steer_vec, mask, prompt, tok.eot, dims=model.dims,
                          cfg=cfg, ablating=ablating, max_new_tokens=max_new_tokens)
            out += [tok.decode(cut_at_eot(row, tok.eot)) for row in np.asarray(ids)[:n]]
    return texts


def edited_transcripts(model, audio: Sequence, sae, *, steer: tuple | None = None,
                       ablate: Sequence[int] | None = None, batch_size: int = 8,
                       max_new_tokens: int | None = None) -> list[str]:
    """Greedy transcripts of ``audio`` (paths or waveforms) with, on each clip's audio frames
    at the SAE's (encoder) site and layer, ``steer = (latent_ids, alphas)`` added and/or the
    latents ``ablate`` removed (module docstring). Neither: the clean transcripts."""
    return edited_transcripts_many(model, audio, sae, [dict(steer=steer, ablate=ablate)], batch_size=batch_size,
                                   max_new_tokens=max_new_tokens)[0]
