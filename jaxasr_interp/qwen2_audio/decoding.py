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

from jaxasr_interp.core.edits import Edit, resolve
from jaxasr_interp.whisper.sites import axes
from jaxasr_interp.qwen2_audio.config import QwenAudioDims
from jaxasr_interp.qwen2_audio.model import _cast, decode, encode
from jaxasr_interp.qwen2_audio.sites import ENCODER_SITES, n_layers
from jaxasr_interp.qwen2_audio.sites import shape as site_shape


def init_cache(dims: QwenAudioDims, length: int, dtype=jnp.float32) -> dict:
    empty = jnp.zeros((dims.n_text_layer, dims.n_kv_head, length, dims.d_head), dtype)
    return {"k": empty, "v": empty}


def _token_edits(edits, dims: QwenAudioDims, default_len: int) -> dict:
    """Resolve the LLM edits, each against as many positions as its data or mask has."""
    out = {}
    for name, edit in (edits or {}).items():
        if name in ENCODER_SITES:
            continue
        if name.endswith(".pattern"):
            raise ValueError(f"{name!r} cannot be edited during cached decoding (its key axis grows); "
                             "edit decoder.attn.z or decoder.attn_out instead")
        layered = n_layers(name, dims) is not None
        axis = axes(name).index("pos") + layered
        lengths = [jnp.shape(x)[axis] for x in (edit.data, edit.mask)
                   if x is not None and jnp.ndim(x) > axis and jnp.shape(x)[axis] > 1]
        n = max(lengths, default=default_len)
        out[name] = resolve(edit, name, site_shape(name, dims, n), n_layers(name, dims))
    return out


def _slice(token_edits: dict, dims: QwenAudioDims, start, length: int) -> dict:
    """The edits for tokens ``start .. start + length - 1`` (unedited past an edit's end)."""
    out = {}
    for name, edit in token_edits.items():
        axis = axes(name).index("pos") + (n_layers(name, dims) is not None)

        def take(x):
            if x is None or x.shape[axis] == 1:
                return x
            # zero padding: past an edit's last position its weight is 0, the token unedited
            pad = [(0, 0)] * x.ndim
            pad[axis] = (0, length)
            return jax.lax.dynamic_slice_in_dim(jnp.pad(x, pad), start, length, axis)

        out[name] = Edit(edit.kind, take(edit.data), take(edit.alpha))
    return out


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
    params = {"decoder": _cast(params["decoder"], dtype)}
    token_edits = _token_edits(edits, dims, n_prompt + max_new_tokens)
    cache = init_cache(dims, n_prompt + max_new_tokens, dtype)
    logits, _, cache = decode(params, prompt, audio_embeds, dims=dims, edits=_slice(token_edits, dims, 0, n_prompt),
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
        step = _slice(token_edits, dims, n_prompt + i, 1)
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
