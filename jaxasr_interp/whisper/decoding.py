"""Greedy decoding under ``jit`` with an explicit KV cache.

The cache is a plain pytree, one per utterance (batches are ``vmap``)::

    {"self_k", "self_v": L x [H, n_text_ctx, dh],   # filled position by position
     "cross_k", "cross_v": L x [H, S, dh]}          # computed once from the audio features

Each entry is a tuple of per-layer arrays (a step is tiny: under ``lax.scan`` XLA would copy
each layer's slice of a stacked cache, and of the weights, at every step), and head-major, unlike the ``[T, H, dh]`` site layout (see :func:`.layers.head_major`).

The default rule is a plain argmax over the whole vocabulary: the analyses need to see what the
model itself prefers, an immediate end-of-text included. ``suppress=True`` applies Whisper's
usual rules instead: blank (space, end-of-text) suppressed at the first step, and the
non-speech symbols and task tokens suppressed at every step (the set of
:meth:`~.tokenizer.WhisperTokenizer.suppress_ids`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxasr_interp.core.edits import resolve, resolve_positions, slice_positions
from jaxasr_interp.core.engine import layer_list, unwrap
from jaxasr_interp.core.sites import Tap
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.model import Params, cross_kv, decode
from jaxasr_interp.whisper.sites import WHISPER


def init_cache(params: Params, audio_features, *, dims: Dims, edits=None, dtype=jnp.float32):
    """KV cache for one utterance: cross-attention keys/values computed (edits applied)."""
    params = unwrap(params)
    cross_params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params["decoder"]["blocks"]["cross_attn"])
    block_edits = {k: resolve(v, k, WHISPER.shape(k, dims, 1), WHISPER.n_layers(k, dims))
                   for k, v in (edits or {}).items() if k in WHISPER.audio_sites}

    def body(_, layer):
        p_l, edits_l = layer
        k, v = cross_kv(p_l, audio_features.astype(dtype), Tap("decoder", edits_l, ()),
                        dims.n_text_head)
        return None, (k, v)

    _, (cross_k, cross_v) = jax.lax.scan(body, None, (cross_params, block_edits))
    d_head = dims.n_text_state // dims.n_text_head
    empty = (jnp.zeros((dims.n_text_head, dims.n_text_ctx, d_head), dtype),) * dims.n_text_layer
    return {"self_k": empty, "self_v": empty, "cross_k": tuple(cross_k), "cross_v": tuple(cross_v)}


def logit_bias(n_vocab: int, ids) -> jnp.ndarray:
    """0 everywhere, -inf at ``ids``: added to logits to suppress tokens."""
    bias = jnp.zeros((n_vocab,), jnp.float32)
    return bias.at[jnp.asarray(list(ids), jnp.int32)].set(-jnp.inf) if len(ids) else bias


@functools.partial(jax.jit, static_argnames=("dims", "max_new_tokens", "dtype", "precision"))
def greedy_decode(params: Params, audio_features, prompt, eot, bias, first_bias, *, dims: Dims,
                  max_new_tokens: int, edits=None, dtype=jnp.float32, precision="highest"):
    """Greedy tokens for a batch: audio_features [B, S, D], prompt [P] -> ids [B, max_new_tokens].

    Positions after end-of-text are filled with ``eot``. ``bias`` is added to the logits at every
    step and ``first_bias`` too at the first step (see :func:`logit_bias`). The loop stops as
    soon as every item has produced end-of-text.
    """
    batch = audio_features.shape[0]
    n_prompt = prompt.shape[0]
    if n_prompt + max_new_tokens > dims.n_text_ctx:
        raise ValueError(f"prompt ({n_prompt}) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"decoder context of {dims.n_text_ctx} tokens")
    # Weights cast to the compute dtype and sliced per layer once, outside the loop (decode's
    # own cast is then a no-op instead of a conversion of every weight at every step).
    decoder = jax.tree_util.tree_map(lambda a: a.astype(dtype), unwrap(params)["decoder"])
    params = {"decoder": {**decoder, "blocks": layer_list(decoder["blocks"])}}
    cache = jax.vmap(lambda af: init_cache({"decoder": decoder}, af, dims=dims, edits=edits,
                                           dtype=dtype))(audio_features)
    token_edits = resolve_positions(WHISPER, edits, dims, dims.n_text_ctx)

    # Only the self-attention cache is carried by the loop; the cross-attention keys and values
    # are loop constants (carrying them would copy them at every step).
    cross = {k: cache.pop(k) for k in ("cross_k", "cross_v")}

    def step(self_kv, tokens, offset, edits):
        def one(c, t):
            logits, _, c = decode(params, t, None, dims=dims, edits=edits, cache=c, offset=offset,
                                  dtype=dtype, precision=precision)
            return logits[-1], {k: c[k] for k in ("self_k", "self_v")}
        logits, kv = jax.vmap(one)({**self_kv, **cross}, tokens)
        # a barrier: XLA CPU would otherwise fuse the bias add into the vocabulary dot and
        # transpose the whole token embedding at every step to do so
        return jax.lax.optimization_barrier(logits), kv

    # The prompt runs as one block: its edits are those of positions 0..n_prompt-1.
    logits, cache = step(cache, jnp.broadcast_to(prompt, (batch, n_prompt)), 0,
                         slice_positions(WHISPER, token_edits, dims, 0, n_prompt))
    first = jnp.argmax(logits + bias + first_bias, axis=-1)
    out = jnp.full((batch, max_new_tokens), eot, jnp.int32)

    def cond(state):
        i, _, _, _, done = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(state):
        i, token, cache, out, done = state
        token = jnp.where(done, eot, token).astype(jnp.int32)
        out = out.at[:, i].set(token)
        done = done | (token == eot)
        logits, cache = step(cache, token[:, None], n_prompt + i,
                             slice_positions(WHISPER, token_edits, dims, n_prompt + i, 1))
        return i + 1, jnp.argmax(logits + bias, axis=-1), cache, out, done

    state = (jnp.int32(0), first, cache, out, jnp.zeros((batch,), bool))
    return jax.lax.while_loop(cond, body, state)[3]
