"""Whisper as pure functions: ``encode``, ``decode``, ``forward``.

The core is unbatched (one utterance; ``jax.vmap`` makes batches). Each stack's blocks run
under ``lax.scan`` over the stacked layer axis of the parameters, so compile time does not grow
with depth and per-layer activations come out stacked ``[L, ...]``.

Every site of :mod:`.sites` passes through a :class:`~.sites.Tap`, which applies the edits
given for it and records it when asked to capture. Edits of block sites carry a leading layer
axis and are scanned alongside the parameters.

``precision`` sets JAX's default matmul precision while tracing: ``"highest"`` (the default)
is float32-exact on GPU and TPU too, where JAX would otherwise use TF32 / bf16 passes.
``dtype=jnp.bfloat16`` runs the matmuls in bfloat16 (LayerNorm and softmax stay float32).
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from jaxasr_interp.core import layers as L
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.core.edits import resolve
from jaxasr_interp.whisper.sites import ALL_SITES, BLOCK_SITES, DECODER_SITES, ENCODER_SITES, Tap, expand, n_layers, unknown_site
from jaxasr_interp.whisper.sites import shape as site_shape

Params = Mapping[str, Any]


def _cast(params, dtype):
    if dtype == jnp.float32:
        return params
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)


def _split(edits, capture, stack_sites, dims: Dims, n_tokens: int):
    """Resolve the edits of one stack and split edits and captures into whole-stack and
    per-block ones (the latter are scanned with the stacked parameters)."""
    for name in edits or {}:
        if name not in ALL_SITES:
            raise unknown_site(name)
    edits = {k: resolve(v, k, site_shape(k, dims, n_tokens), n_layers(k, dims))
             for k, v in (edits or {}).items() if k in stack_sites}
    capture = [c for c in capture if c in stack_sites]
    block_edits = {k: v for k, v in edits.items() if k in BLOCK_SITES}
    stack_edits = {k: v for k, v in edits.items() if k not in BLOCK_SITES}
    return stack_edits, block_edits, [c for c in capture if c not in BLOCK_SITES], \
        [c for c in capture if c in BLOCK_SITES]


def _self_attention(x, p, tap, n_head, prefix, mask, cache=None, offset=None):
    """Self-attention; with a KV ``cache`` (this layer's head-major ``self_k``/``self_v``), the
    new keys and values are written at ``offset`` and the updated cache is returned."""
    q = tap(f"{prefix}.q", L.split_heads(L.linear(x, p["query"]), n_head))
    k = tap(f"{prefix}.k", L.split_heads(L.linear(x, p["key"]), n_head))
    v = tap(f"{prefix}.v", L.split_heads(L.linear(x, p["value"]), n_head))
    k, v = L.head_major(k), L.head_major(v)
    if cache is not None:
        cache = {name: jax.lax.dynamic_update_slice(cache[name], new.astype(cache[name].dtype), (0, offset, 0))
                 for name, new in (("self_k", k), ("self_v", v))}
        k, v = cache["self_k"], cache["self_v"]
    pattern = tap(f"{prefix}.pattern", L.attention_pattern(q, k, mask))
    z = tap(f"{prefix}.z", L.attend(pattern, v))
    return L.linear(z.reshape(z.shape[0], -1), p["out"]), cache


def encoder_block(x, p, tap: Tap, n_head: int, mask=None):
    """One encoder block; ``mask`` (boolean [S, S], True = may attend) hides padded frames
    (Qwen2-Audio's encoder masks them; Whisper's attends to every frame)."""
    x = tap("resid_pre", x)
    attn, _ = _self_attention(L.layer_norm(x, p["attn_ln"]), p["attn"], tap, n_head, "attn", mask)
    x = tap("resid_mid", x + tap("attn_out", attn))
    hidden = tap("mlp.hidden", L.gelu(L.linear(L.layer_norm(x, p["mlp_ln"]), p["mlp1"])))
    return tap("resid_post", x + tap("mlp_out", L.linear(hidden, p["mlp2"])))


def cross_kv(p, audio_features, tap: Tap, n_head: int):
    """Cross-attention keys and values of one decoder block, head-major [H, S, dh] each."""
    k = tap("cross_attn.k", L.split_heads(L.linear(audio_features, p["key"]), n_head))
    v = tap("cross_attn.v", L.split_heads(L.linear(audio_features, p["value"]), n_head))
    return L.head_major(k), L.head_major(v)


def decoder_block(x, p, tap: Tap, n_head: int, audio_features, mask, cache=None, offset=None,
                  cross=None):
    """One decoder block. Cross-attention keys/values come from ``cache`` (cached decoding),
    else from ``cross`` (precomputed head-major (k, v)), else from ``audio_features``."""
    x = tap("resid_pre", x)
    attn, new_cache = _self_attention(L.layer_norm(x, p["attn_ln"]), p["attn"], tap, n_head,
                                      "self_attn", mask, cache, offset)
    x = tap("resid_mid", x + tap("self_attn_out", attn))
    h = L.layer_norm(x, p["cross_attn_ln"])
    q = tap("cross_attn.q", L.split_heads(L.linear(h, p["cross_attn"]["query"]), n_head))
    if cache is not None:
        k, v = cache["cross_k"], cache["cross_v"]
    elif cross is not None:
        k, v = cross
    else:
        k, v = cross_kv(p["cross_attn"], audio_features, tap, n_head)
    pattern = tap("cross_attn.pattern", L.attention_pattern(q, k))
    z = tap("cross_attn.z", L.attend(pattern, v))
    cross = tap("cross_attn_out", L.linear(z.reshape(z.shape[0], -1), p["cross_attn"]["out"]))
    x = tap("resid_mid_cross", x + cross)
    hidden = tap("mlp.hidden", L.gelu(L.linear(L.layer_norm(x, p["mlp_ln"]), p["mlp1"])))
    return tap("resid_post", x + tap("mlp_out", L.linear(hidden, p["mlp2"]))), new_cache


def _check_mel(mel, dims: Dims):
    want = (dims.n_mels, dims.n_samples_frames)
    if tuple(mel.shape) != want:
        raise ValueError(f"mel has shape {tuple(mel.shape)}, expected {want} [n_mels, frames] for "
                         "this model (one utterance; use jax.vmap for batches, log_mel to pad to 30 s)")


_STATIC = ("dims", "capture", "dtype", "precision")


def encode(params: Params, mel, *, dims: Dims, edits=None, capture=(), dtype=jnp.float32,
           precision: str | None = "highest"):
    """Encoder: mel [n_mels, 2 * n_audio_ctx] -> (audio features [n_audio_ctx, D], acts)."""
    _check_mel(mel, dims)
    return _encode(params, mel, dims=dims, edits=edits, capture=expand(capture), dtype=dtype,
                   precision=precision)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _encode(params, mel, *, dims, edits, capture, dtype, precision):
    stack_edits, block_edits, stack_capture, block_capture = _split(edits, capture, ENCODER_SITES, dims, 0)
    with jax.default_matmul_precision(precision):
        p = _cast(params["encoder"], dtype)
        tap = Tap("", stack_edits, stack_capture)
        x = encoder_stem(mel, p, tap, dtype)
        x, stacked = _encoder_blocks(x, p["blocks"], block_edits, block_capture, dims)
        x = tap("encoder.ln_post", L.layer_norm(x, p["ln_post"]))
    return x, {**tap.captured, **stacked}


def encoder_stem(mel, p, tap: Tap, dtype):
    """Two GELU convolutions (the second halves the frames) plus positions: ``encoder.embed``."""
    x = L.gelu(L.conv1d(mel.T.astype(dtype), p["conv1"], stride=1))
    x = L.gelu(L.conv1d(x, p["conv2"], stride=2))
    return tap("encoder.embed", x + p["positional_embedding"][: x.shape[0]])


def _encoder_blocks(x, blocks, block_edits, block_capture, dims: Dims, mask=None):
    def body(x, layer):
        p_l, edits_l = layer
        block_tap = Tap("encoder", edits_l, block_capture)
        return encoder_block(x, p_l, block_tap, dims.n_audio_head, mask), block_tap.captured

    return jax.lax.scan(body, x, (blocks, block_edits))


def decode(params: Params, tokens, audio_features, *, dims: Dims, edits=None, capture=(),
           cache=None, offset=0, dtype=jnp.float32, precision: str | None = "highest"):
    """Decoder: tokens [T] -> (logits [T, n_vocab] in float32, acts), or with a KV ``cache``
    (see :mod:`.decoding`) -> (logits, acts, new cache) for tokens at positions ``offset...``."""
    if jnp.ndim(tokens) != 1:
        raise ValueError(f"tokens must be 1-D [T] for one utterance, got shape {jnp.shape(tokens)}; "
                         "use jax.vmap for batches")
    return _decode(params, jnp.asarray(tokens), audio_features, dims=dims, edits=edits,
                   capture=expand(capture), cache=cache, offset=offset, dtype=dtype,
                   precision=precision)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _decode(params, tokens, audio_features, *, dims, edits, capture, cache, offset, dtype, precision):
    stack_edits, block_edits, stack_capture, block_capture = _split(edits, capture, DECODER_SITES, dims, tokens.shape[0])
    n_tokens = tokens.shape[0]
    with jax.default_matmul_precision(precision):
        p = _cast(params["decoder"], dtype)
        tap = Tap("", stack_edits, stack_capture)
        positions = jax.lax.dynamic_slice_in_dim(p["positional_embedding"], offset, n_tokens)
        x = tap("decoder.embed", p["token_embedding"][tokens] + positions)
        query_pos = offset + jnp.arange(n_tokens)
        key_len = n_tokens if cache is None else cache["self_k"][0].shape[-2]
        mask = jnp.arange(key_len)[None, :] <= query_pos[:, None]
        if audio_features is not None:
            audio_features = audio_features.astype(dtype)

        if cache is None:
            x, stacked = _decoder_blocks(x, p["blocks"], block_edits, block_capture, audio_features,
                                         mask, dims)
        else:
            x, stacked, cache = _cached_blocks(x, p["blocks"], block_edits, block_capture, cache,
                                               mask, offset, dims)
        x = tap("decoder.ln_final", L.layer_norm(x, p["ln"]))
        logits = tap("logits", (x @ p["token_embedding"].T).astype(jnp.float32))
    acts = {**tap.captured, **stacked}
    return (logits, acts) if cache is None else (logits, acts, cache)


def _decoder_blocks(x, blocks, block_edits, block_capture, audio_features, mask, dims: Dims,
                    cross=None):
    def body(x, layer):
        p_l, edits_l, cross_l = layer
        block_tap = Tap("decoder", edits_l, block_capture)
        x, _ = decoder_block(x, p_l, block_tap, dims.n_text_head, audio_features, mask, cross=cross_l)
        return x, block_tap.captured

    return jax.lax.scan(body, x, (blocks, block_edits, cross))


def layer_list(blocks, n_layers: int) -> tuple:
    """Stacked block parameters ``[L, ...]`` -> a tuple of per-layer trees (static slices)."""
    if isinstance(blocks, (tuple, list)):
        return tuple(blocks)
    return tuple(jax.tree_util.tree_map(lambda a, i=i: a[i], blocks) for i in range(n_layers))


def _cached_blocks(x, blocks, block_edits, block_capture, cache, mask, offset, dims: Dims):
    """The decoder blocks for cached decoding, unrolled over layers.

    A KV-cache step is tiny, so here the layer loop is unrolled and the cache is a tuple of
    per-layer arrays: under ``lax.scan`` XLA copies each layer's slice of the stacked cache
    (and of the weights) at every step, which costs more than the step's arithmetic.
    ``blocks`` may be pre-split with :func:`layer_list` so the slicing happens once per loop.
    """
    n = dims.n_text_layer
    new = {name: [] for name in cache}
    captured = []
    for i, p_l in enumerate(layer_list(blocks, n)):
        block_tap = Tap("decoder", jax.tree_util.tree_map(lambda a: a[i], block_edits), block_capture)
        cache_l = {name: cache[name][i] for name in cache}
        x, updated = decoder_block(x, p_l, block_tap, dims.n_text_head, None, mask, cache_l, offset)
        for name in new:
            new[name].append(updated.get(name, cache_l[name]))
        captured.append(block_tap.captured)
    stacked = {k: jnp.stack([c[k] for c in captured]) for k in block_capture}
    return x, stacked, {name: tuple(v) for name, v in new.items()}


def forward(params: Params, mel, tokens, *, dims: Dims, edits=None, capture=(),
            dtype=jnp.float32, precision: str | None = "highest"):
    """Teacher-forced pass: mel [n_mels, frames], tokens [T] -> (logits [T, n_vocab], acts).

    ``acts`` maps each captured site name (patterns expanded) to its value; block sites are
    stacked over layers ``[L, ...]``.
    """
    audio_features, enc_acts = encode(params, mel, dims=dims, edits=edits, capture=capture,
                                      dtype=dtype, precision=precision)
    logits, dec_acts = decode(params, tokens, audio_features, dims=dims, edits=edits,
                              capture=capture, dtype=dtype, precision=precision)
    return logits, {**enc_acts, **dec_acts}
