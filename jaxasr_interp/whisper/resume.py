"""Resuming a stack at a layer: ``encode_from`` and ``decode_from``.

An edit at layer l leaves layers 0..l-1 as in the clean run, so a patch only needs layers
l..L-1, started from the clean run's ``resid_pre[l]``. These functions take that residual and
run the rest of the stack with the same sites, edits and captures as :func:`.model.encode` /
:func:`.model.decode`.

Edits are given as for the full pass (layer axis over all L layers) and may touch layers
>= ``start_layer`` only: an earlier one is refused when the edit is concrete (inside an outer
``jit``/``vmap`` it cannot be inspected; there the caller guarantees it). Captured block sites
are stacked over layers ``start_layer..L-1`` (``[L - start_layer, ...]``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxasr_interp.core import layers as L
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.core.edits import resolve
from jaxasr_interp.whisper.model import _STATIC, Params, _cast, _decoder_blocks, _encoder_blocks, _split, cross_kv
from jaxasr_interp.whisper.sites import BLOCK_SITES, DECODER_SITES, ENCODER_SITES, Tap, expand, n_layers
from jaxasr_interp.whisper.sites import shape as site_shape


def _check(resid, want, start_layer: int, n_layer: int, edits, capture, embed: str, dims: Dims):
    if not 0 <= start_layer < n_layer:
        raise ValueError(f"start_layer must be in [0, {n_layer}), got {start_layer}")
    shape = tuple(jnp.shape(resid))
    if len(shape) != 2 or shape[1] != want[1] or want[0] not in (None, shape[0]):
        raise ValueError(f"resid has shape {tuple(jnp.shape(resid))}, expected {want} "
                         f"(one utterance's resid_pre at start_layer)")
    if embed in (edits or {}) or embed in expand(capture):
        raise ValueError(f"{embed} lies before start_layer; use the full pass for it")
    for name, edit in (edits or {}).items():
        if name not in BLOCK_SITES or not name.startswith(embed.split(".")[0]):
            continue
        w = resolve(edit, name, site_shape(name, dims, jnp.shape(resid)[0]), n_layers(name, dims)).alpha
        if not isinstance(w, jax.core.Tracer) and bool(jnp.any(w[:start_layer] != 0)):
            raise ValueError(f"the edit of {name!r} touches a layer before start_layer={start_layer}; "
                             "start earlier or use the full pass")


def _later(*trees_and_start):
    *trees, start_layer = trees_and_start
    return jax.tree_util.tree_map(lambda a: a[start_layer:], tuple(trees))


def encode_from(params: Params, resid, *, start_layer: int, dims: Dims, edits=None, capture=(),
                dtype=jnp.float32, precision: str | None = "highest"):
    """Encoder blocks ``start_layer..`` from ``resid`` [S, D] -> (audio features, acts)."""
    _check(resid, (dims.n_audio_ctx, dims.n_audio_state), start_layer, dims.n_audio_layer, edits,
           capture, "encoder.embed", dims)
    return _encode_from(params, resid, start_layer=start_layer, dims=dims, edits=edits,
                        capture=expand(capture), dtype=dtype, precision=precision)


@functools.partial(jax.jit, static_argnames=_STATIC + ("start_layer",))
def _encode_from(params, resid, *, start_layer, dims, edits, capture, dtype, precision):
    stack_edits, block_edits, stack_capture, block_capture = _split(edits, capture, ENCODER_SITES, dims, 0)
    with jax.default_matmul_precision(precision):
        p = _cast(params["encoder"], dtype)
        tap = Tap("", stack_edits, stack_capture)
        blocks, block_edits = _later(p["blocks"], block_edits, start_layer)
        x, stacked = _encoder_blocks(resid.astype(dtype), blocks, block_edits, block_capture, dims)
        x = tap("encoder.ln_post", L.layer_norm(x, p["ln_post"]))
    return x, {**tap.captured, **stacked}


def cross_kv_stack(params: Params, audio_features, *, dims: Dims, dtype=jnp.float32,
                   precision: str | None = "highest"):
    """Every decoder layer's cross-attention keys and values, head-major ``([L, H, S, dh]``
    twice): computed once, they serve every patch of a sweep through ``decode_from(cross=...)``."""
    with jax.default_matmul_precision(precision):
        p = _cast(params["decoder"]["blocks"]["cross_attn"], dtype)
        af = audio_features.astype(dtype)
        return jax.lax.map(lambda p_l: cross_kv(p_l, af, Tap("decoder", {}, ()), dims.n_text_head), p)


def decode_from(params: Params, resid, audio_features, *, start_layer: int, dims: Dims, edits=None,
                capture=(), cross=None, dtype=jnp.float32, precision: str | None = "highest"):
    """Decoder blocks ``start_layer..`` from ``resid`` [T, D] (teacher forced, no cache) ->
    (logits [T, n_vocab], acts). ``cross``: precomputed :func:`cross_kv_stack` (then
    ``audio_features`` may be None, and cross-attention k/v cannot be edited or captured)."""
    _check(resid, (None, dims.n_text_state), start_layer, dims.n_text_layer, edits, capture,
           "decoder.embed", dims)
    kv_sites = {"decoder.cross_attn.k", "decoder.cross_attn.v"}
    if cross is not None and kv_sites & (set(edits or {}) | set(expand(capture))):
        raise ValueError("cross-attention k/v are precomputed (cross=...): pass audio_features "
                         "instead to edit or capture them")
    return _decode_from(params, resid, audio_features, cross, start_layer=start_layer, dims=dims,
                        edits=edits, capture=expand(capture), dtype=dtype, precision=precision)


@functools.partial(jax.jit, static_argnames=_STATIC + ("start_layer",))
def _decode_from(params, resid, audio_features, cross, *, start_layer, dims, edits, capture, dtype,
                 precision):
    n_tokens = resid.shape[0]
    stack_edits, block_edits, stack_capture, block_capture = _split(edits, capture, DECODER_SITES, dims, n_tokens)
    with jax.default_matmul_precision(precision):
        p = _cast(params["decoder"], dtype)
        tap = Tap("", stack_edits, stack_capture)
        mask = jnp.tril(jnp.ones((n_tokens, n_tokens), bool))
        blocks, block_edits, cross = _later(p["blocks"], block_edits, cross, start_layer)
        if audio_features is not None:
            audio_features = audio_features.astype(dtype)
        x, stacked = _decoder_blocks(resid.astype(dtype), blocks, block_edits, block_capture,
                                     audio_features, mask, dims, cross)
        x = tap("decoder.ln_final", L.layer_norm(x, p["ln"]))
        logits = tap("logits", (x @ p["token_embedding"].T).astype(jnp.float32))
    return logits, {**tap.captured, **stacked}
