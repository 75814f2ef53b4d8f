"""The logit lens over Qwen2-Audio's LLM layers (PAPER.md method 1, for the second model).

A residual site (``resid_mid`` or ``resid_post``) of LLM layer ``l`` is read through the final
RMSNorm and the (untied) ``lm_head``, exactly as the last layer is read by the model, so
``resid_post`` of the last layer read this way is the model's own logits (tested). The result
is the Whisper lens's :class:`~jaxasr_interp.lens.LogitLens` (same fields, same saturation
layer from :func:`~jaxasr_interp.lens.saturation_layer`), so its tables and plots apply as-is.
:func:`lens_readout` is the pure core, for residuals captured by any run (edited ones too).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.lenses.logit import LogitLens, saturation_layer
from jaxasr_interp.qwen2_audio.config import QwenAudioDims
from jaxasr_interp.qwen2_audio.model import forward, rms_norm

LENS_SITES = ("resid_mid", "resid_post")


def _read_one(resid, norm, lm_head, eps, final_logp, final_ids, k: int):
    logp = jax.nn.log_softmax((rms_norm(resid, norm, eps) @ lm_head).astype(jnp.float32), -1)
    top_logp, top_ids = jax.lax.top_k(logp, k)
    here = jnp.take_along_axis(logp, final_ids[:, None], -1)[:, 0]
    rank = jnp.sum(logp > here[:, None], -1)
    kl = jnp.sum(jnp.exp(final_logp) * (final_logp - logp), -1)
    return top_ids, jnp.exp(top_logp), jnp.exp(here), rank, kl


@functools.partial(jax.jit, static_argnames=("dims", "sites", "k"))
def lens_readout(params, logits, resids, *, dims, sites, k):
    """Pure core: the model's logits [T, V] and resids [S, L, T, D] (site order ``sites``) ->
    (final_ids, top_ids, top_probs, final_prob, final_rank, kl, saturation)."""
    final_logp = jax.nn.log_softmax(logits, -1)
    final_ids = jnp.argmax(logits, -1)
    dec = params["decoder"]
    flat = resids.reshape((-1,) + resids.shape[2:])
    # one layer's [T, V] logits live at a time (lax.map), which keeps a 156k vocabulary in memory
    with jax.default_matmul_precision("highest"):
        out = jax.lax.map(lambda r: _read_one(r, dec["norm"], dec["lm_head"]["kernel"], dims.rms_eps,
                                              final_logp, final_ids, k), flat)
    out = tuple(o.reshape(resids.shape[:2] + o.shape[1:]) for o in out)
    post = out[0][sites.index("resid_post"), :, :, 0]
    return (final_ids,) + out + (saturation_layer(post, final_ids),)


def logit_lens(params, mel, tokens, *, dims: QwenAudioDims, n_frames=None, sites=LENS_SITES,
               k: int = 5) -> LogitLens:
    """Logit lens of one utterance (mel [n_mels, frames], tokens [T] with audio tokens
    expanded), teacher-forced. ``sites`` must include ``resid_post``."""
    sites = tuple(sites)
    if any(s not in LENS_SITES for s in sites) or "resid_post" not in sites:
        raise ValueError(f"logit lens sites must be among {LENS_SITES} and include 'resid_post', got {sites}")
    if not 1 <= k <= dims.n_vocab:
        raise ValueError(f"k must be between 1 and n_vocab ({dims.n_vocab}), got {k}")
    logits, acts = forward(params, mel, tokens, dims=dims, n_frames=n_frames,
                           capture=[f"decoder.{s}" for s in sites])
    resids = jnp.stack([acts[f"decoder.{s}"] for s in sites])
    out = lens_readout(params, logits, resids, dims=dims, sites=sites, k=k)
    final_ids, top_ids, top_probs, final_prob, final_rank, kl, sat = map(np.asarray, out)
    return LogitLens(sites, np.asarray(tokens), final_ids, top_ids, top_probs, final_prob, final_rank, kl, sat)
