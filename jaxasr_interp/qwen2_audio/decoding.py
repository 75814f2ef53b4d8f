"""Greedy decoding of Qwen2-Audio under ``jit`` with an explicit KV cache, edits active.

The cache is a plain pytree for one utterance (batches are ``vmap``)::

    {"k", "v": [L, K, C, dh]}    # head-major, rotary already applied to k; C = prompt + new tokens

The prompt (audio embeddings written at its ``<|AUDIO|>`` tokens) runs as one block, then one
token per step in a ``lax.while_loop`` that stops when every item has produced an end token.
Decoding is a plain argmax over the whole vocabulary (transformers' ``do_sample=False``).

Edits of LLM sites act on token positions: an edit's data or mask with a position axis of
length ``n`` edits positions ``0..n-1`` (prompt and generated tokens alike) and leaves later
ones unedited; an edit without a position axis acts at every position. Attention patterns
cannot be edited here (their key axis grows); edit ``attn.z`` or ``attn_out`` instead. Edit
the audio encoder through :func:`.model.encode` (:func:`generate` does both).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxasr_interp.core.edits import resolve_positions, slice_positions
from jaxasr_interp.core.engine import cast, unwrap
from jaxasr_interp.qwen2_audio.config import QwenAudioDims
from jaxasr_interp.qwen2_audio.model import decode, encode
from jaxasr_interp.qwen2_audio.sites import QWEN2_AUDIO


def init_cache(dims: QwenAudioDims, length: int, dtype=jnp.float32) -> dict:
    empty = jnp.zeros((dims.n_text_layer, dims.n_kv_head, length, dims.d_head), dtype)
    return {"k": empty, "v": empty}


@functools.partial(jax.jit, static_argnames=("dims", "max_new_tokens", "dtype", "precision"))
def greedy_decode(params, audio_embeds, prompt, eos_ids, *, dims: QwenAudioDims, max_new_tokens: int,
                  edits=None, dtype=jnp.float32, precision="highest"):
    """Greedy ids [max_new_tokens] for one utterance: audio_embeds [A, Dt] (from
    :func:`.model.encode`), prompt [P] with its audio tokens expanded, ``eos_ids`` [E] (ids
    that end the answer, e.g. ``<|im_end|>`` and ``<|endoftext|>``). After the first end
    token the row is filled with ``eos_ids[0]``."""
    n_prompt = prompt.shape[0]
    if n_prompt + max_new_tokens > dims.n_text_ctx:
        raise ValueError(f"prompt ({n_prompt}) + max_new_tokens ({max_new_tokens}) exceeds the "
                         f"context of {dims.n_text_ctx} positions")
    # cast once, outside the loop (decode's own cast is then a no-op at every step)
    params = {"decoder": cast(unwrap(params)["decoder"], dtype)}
    token_edits = resolve_positions(QWEN2_AUDIO, edits, dims, n_prompt + max_new_tokens)
    cache = init_cache(dims, n_prompt + max_new_tokens, dtype)
    logits, _, cache = decode(params, prompt, audio_embeds, dims=dims, edits=slice_positions(QWEN2_AUDIO, token_edits, dims, 0, n_prompt),
                              cache=cache, offset=0, dtype=dtype, precision=precision)
    pad = eos_ids[0].astype(jnp.int32)
    out = jnp.full((max_new_tokens,), pad, jnp.int32)

    def cond(state):
        i, _, _, _, done = state
        return (i < max_new_tokens) & ~done

    def body(state):
        i, token, cache, out, done = state
        token = jnp.where(done, pad, token)  # under vmap, finished items keep stepping
        out = out.at[i].set(token)
        done = done | jnp.any(token == eos_ids)
        step = slice_positions(QWEN2_AUDIO, token_edits, dims, n_prompt + i, 1)
        logits, _, cache = decode(params, token[None], None, dims=dims, edits=step, cache=cache,
                                  offset=n_prompt + i, dtype=dtype, precision=precision)
        return i + 1, jnp.argmax(logits[-1]).astype(jnp.int32), cache, out, done

    state = (jnp.int32(0), jnp.argmax(logits[-1]).astype(jnp.int32), cache, out, jnp.bool_(False))
    return jax.lax.while_loop(cond, body, state)[3]


def generate(params, mel, prompt, eos_ids, *, dims: QwenAudioDims, n_frames=None, max_new_tokens: int = 32,
             edits=None, dtype=jnp.float32, precision="highest"):
    """Encoder (with its edits) then :func:`greedy_decode`: mel -> ids [max_new_tokens]."""
    embeds, _ = encode(params, mel, dims=dims, n_frames=n_frames, edits=edits, dtype=dtype, precision=precision)
    return greedy_decode(params, embeds, jnp.asarray(prompt, jnp.int32), jnp.atleast_1d(jnp.asarray(eos_ids, jnp.int32)),
                         dims=dims, max_new_tokens=max_new_tokens, edits=edits, dtype=dtype, precision=precision)
