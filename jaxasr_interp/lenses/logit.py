"""The decoder logit lens (PAPER.md method 1).

At each decoder layer ``l`` and token position ``t`` a residual-stream site (``resid_mid``,
``resid_mid_cross`` or ``resid_post``) is read through the decoder's final LayerNorm and the
tied token embedding, exactly as the last layer is read by the model. From the resulting
next-token distribution the lens reports the top-k tokens, the probability and rank of the
model's final prediction, and KL(final || lens). The **saturation layer** of a position is the
earliest layer from which the ``resid_post`` top-1 equals the final top-1 at every later layer.

Shapes, for one utterance (``S`` sites, ``L`` decoder layers, ``T`` tokens): every per-layer
field of :class:`LogitLens` is ``[S, L, T, ...]``; batched inputs add a leading ``B`` axis.
``resid_post`` of the last layer read this way is the model's own logits (tested).

:func:`lens_readout` is the pure core (jit-compiled; the layer axis is a ``lax.map`` so only
one layer's ``[T, n_vocab]`` logits are live at a time, which keeps large models in memory).
The encoder lens lives in :mod:`.encoder_lens`.

``dtype`` / ``precision`` (:mod:`jaxasr_interp.core.dtypes`): the model's passes and the
read-out's matmul run in ``dtype`` (None: the parameters' storage dtype) at ``precision``, the
read-out's LayerNorm and softmax in float32, so the last layer's ``resid_post`` read out is the
model's own logits in either dtype.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core import layers as L
from jaxasr_interp.core.dtypes import as_precision, compute_dtype, matmul_precision
from jaxasr_interp.core.engine import cast
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.lenses.tuned import translate

LENS_SITES = ("resid_mid", "resid_mid_cross", "resid_post")


@dataclasses.dataclass(frozen=True)
class LogitLens:
    """Logit-lens read-out; arrays are numpy, ``[B?, S, L, T, ...]`` (see module docstring).

    sites: the residual sites read, in the order of the ``S`` axis.
    tokens: ``[B?, T]`` the input tokens (position ``t`` predicts token ``t + 1``).
    final_ids: ``[B?, T]`` the model's top-1 next token (argmax of its logits).
    top_ids, top_probs: ``[B?, S, L, T, k]`` the lens's k most probable tokens, best first.
    final_prob: ``[B?, S, L, T]`` probability the lens gives to ``final_ids``.
    final_rank: ``[B?, S, L, T]`` rank of ``final_ids`` under the lens (0 = top-1).
    kl: ``[B?, S, L, T]`` KL(final distribution || lens distribution), in nats.
    saturation: ``[B?, T]`` saturation layer of each position (from ``resid_post``).
    """

    sites: tuple
    tokens: np.ndarray
    final_ids: np.ndarray
    top_ids: np.ndarray
    top_probs: np.ndarray
    final_prob: np.ndarray
    final_rank: np.ndarray
    kl: np.ndarray
    saturation: np.ndarray

    def site(self, name: str) -> dict:
        """The per-layer fields of one site as a dict of ``[B?, L, T, ...]`` arrays."""
        if name not in self.sites:
            raise KeyError(f"site {name!r} was not read; this lens has {', '.join(self.sites)}")
        i = self.sites.index(name)
        axis = self.top_ids.ndim - 4  # the site axis: 0, or 1 when batched
        return {f: np.take(getattr(self, f), i, axis=axis)
                for f in ("top_ids", "top_probs", "final_prob", "final_rank", "kl")}

    def utterance(self, index: int, n_positions: int | None = None) -> "LogitLens":
        """Utterance ``index`` of a batched lens as an unbatched one, cut to its first
        ``n_positions`` positions (the rest of a batch row is padding; None keeps them all)."""
        if self.tokens.ndim != 2:
            raise ValueError("utterance() takes a batched lens; this one holds one utterance")
        t = slice(None, n_positions)
        per_layer = {f: getattr(self, f)[index][:, :, t]
                     for f in ("top_ids", "top_probs", "final_prob", "final_rank", "kl")}
        return dataclasses.replace(self, tokens=self.tokens[index][t], final_ids=self.final_ids[index][t],
                                   saturation=self.saturation[index][t], **per_layer)


def saturation_layer(top1, final_ids):
    """Earliest layer from which ``top1`` [..., L, T] equals ``final_ids`` [..., T] at every
    later layer; ``L`` when even the last layer disagrees."""
    agree = top1 == final_ids[..., None, :]
    # a reversed cumulative AND: agree from layer l to the end
    suffix = jnp.flip(jnp.cumprod(jnp.flip(agree, -2), axis=-2), -2).astype(bool)
    n_layers = agree.shape[-2]
    return n_layers - jnp.sum(suffix, axis=-2)


def _read_one(resid, ln, embedding, final_logp, final_ids, k: int):
    """One residual [T, D] -> (top ids, top probs, final prob, final rank, KL)."""
    logits = (L.layer_norm(resid, ln) @ embedding.T).astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, -1)
    top_logp, top_ids = jax.lax.top_k(logp, k)
    final_logp_here = jnp.take_along_axis(logp, final_ids[:, None], -1)[:, 0]
    rank = jnp.sum(logp > final_logp_here[:, None], -1)
    kl = jnp.sum(jnp.exp(final_logp) * (final_logp - logp), -1)
    return top_ids, jnp.exp(top_logp), jnp.exp(final_logp_here), rank, kl


@functools.partial(jax.jit, static_argnames=("k", "precision"))
def lens_readout(resids, ln, embedding, logits, *, k: int = 5, precision: str | None = "highest"):
    """Pure core: resids [S, L, T, D], final-LayerNorm params, embedding [V, D], the model's
    logits [T, V] -> (top_ids, top_probs, final_prob, final_rank, kl), each ``[S, L, T, ...]``.
    The read-out matmul runs in the dtype of ``resids`` and ``embedding`` (give both in the
    model's compute dtype) at ``precision``."""
    final_logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    final_ids = jnp.argmax(logits, -1)
    n_sites, n_layers = resids.shape[:2]
    flat = resids.reshape((n_sites * n_layers,) + resids.shape[2:])
    # float32-exact matmuls on GPU/TPU too by default, as in the model (the last layer must
    # equal its logits)
    with matmul_precision(precision):
        out = jax.lax.map(lambda r: _read_one(r, ln, embedding, final_logp, final_ids, k), flat)
    return tuple(o.reshape((n_sites, n_layers) + o.shape[1:]) for o in out)


_STATIC = ("dims", "sites", "k", "dtype", "precision")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _logit_lens_one(params, mel, tokens, translator=None, *, dims, sites, k, dtype, precision):
    numerics = dict(dtype=dtype, precision=precision)
    features, _ = encode(params, mel, dims=dims, **numerics)
    logits, acts = decode(params, tokens, features, dims=dims,
                          capture=[f"decoder.{s}" for s in sites], **numerics)
    resids = jnp.stack([acts[f"decoder.{s}"] for s in sites])
    if translator is not None:  # a tuned lens (see tuned_lens.py): resid_post only
        resids = translate(cast(translator, dtype), resids[0])[None]
    dec = cast({"ln": params["decoder"]["ln"], "embedding": params["decoder"]["token_embedding"]["embedding"]},
               dtype)
    out = lens_readout(resids, dec["ln"], dec["embedding"], logits, k=k, precision=precision)
    final_ids = jnp.argmax(logits, -1)
    post = out[0][sites.index("resid_post"), :, :, 0]
    return (final_ids,) + out + (saturation_layer(post, final_ids),)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _logit_lens_batch(params, mels, tokens, translator=None, *, dims, sites, k, dtype, precision):
    static = dict(dims=dims, sites=sites, k=k, dtype=dtype, precision=precision)
    return jax.vmap(lambda m, t: _logit_lens_one(params, m, t, translator, **static))(mels, tokens)


def logit_lens(model, mel, tokens, *, sites=LENS_SITES, k: int = 5, translator=None, dtype=None,
               precision: str | None = "highest") -> LogitLens:
    """Logit lens of ``model`` on mel [n_mels, frames] with tokens [T] (teacher-forced), or on a
    batch: mel [B, n_mels, frames] with tokens [B, T]. ``sites`` must include ``resid_post``.
    A decoder ``translator`` (:mod:`.tuned_lens`) makes it a tuned lens of ``resid_post`` alone.
    ``dtype`` / ``precision``: see the module docstring (probabilities and KL are float32)."""
    sites = ("resid_post",) if translator is not None else tuple(sites)
    for s in sites:
        if s not in LENS_SITES:
            raise ValueError(f"logit lens site {s!r} is not one of {', '.join(LENS_SITES)}")
    if "resid_post" not in sites:
        raise ValueError("sites must include 'resid_post' (the saturation layer is read from it)")
    mel, tokens = jnp.asarray(mel, jnp.float32), jnp.asarray(tokens, jnp.int32)
    want = (model.dims.n_mels, model.dims.n_samples_frames)
    batched = mel.ndim == 3
    if tuple(mel.shape[batched:]) != want or tokens.ndim != 1 + batched or (
            batched and tokens.shape[0] != mel.shape[0]):
        raise ValueError(f"logit_lens takes mel {want} with tokens [T], or mel [B, *{want}] with "
                         f"tokens [B, T]; got mel {tuple(mel.shape)} and tokens {tuple(tokens.shape)}")
    if not 1 <= k <= model.dims.n_vocab:
        raise ValueError(f"k must be between 1 and n_vocab ({model.dims.n_vocab}), got {k}")
    fn = _logit_lens_batch if batched else _logit_lens_one
    out = fn(model.params, mel, tokens, translator, dims=model.dims, sites=sites, k=k,
             dtype=compute_dtype(dtype, model.params), precision=as_precision(precision))
    final_ids, top_ids, top_probs, final_prob, final_rank, kl, sat = map(np.asarray, out)
    return LogitLens(sites, np.asarray(tokens), final_ids, top_ids, top_probs, final_prob,
                     final_rank, kl, sat)
