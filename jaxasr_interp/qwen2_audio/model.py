"""Qwen2-Audio as pure functions: ``encode`` (audio -> LLM embeddings), ``decode`` (the Qwen2
LLM), ``forward`` (both).

The core is unbatched (one utterance; ``jax.vmap`` makes batches). Qwen2-Audio is one
:class:`~jaxasr_interp.core.family.Family` (``QWEN2_AUDIO``, in :mod:`.sites`) run by the
engine (:func:`jaxasr_interp.core.engine.run_stack`), as Whisper is: this module holds only the
blocks, embeddings and heads that are Qwen's own. The audio encoder *is* the Whisper encoder
(:func:`jaxasr_interp.whisper.model.encoder_block`, reused), except that padded frames are
masked out of its attention, its output is average-pooled (stride 2) before the final
LayerNorm, and a linear projector maps it to the LLM width. The LLM is Qwen2: RMSNorm (float32
statistics), rotary positions, grouped-query attention, a SwiGLU MLP and an untied ``lm_head``.

Every site of :mod:`.sites` passes through a :class:`~jaxasr_interp.core.sites.Tap` (edits
applied, captures recorded), with the edit types of :mod:`jaxasr_interp.core.edits`; edits and
captures reach only the stack they name.

Audio embeddings enter the LLM at the ``<|AUDIO|>`` tokens (``dims.audio_token_id``), in
order, as transformers' processor expands them (one token per pooled audio embedding of the
valid frames: :func:`.config.audio_tokens_for`). ``n_frames`` (the valid mel frames, a traced
integer, so lengths never recompile) sets the encoder's attention mask as transformers'
``feature_attention_mask`` does.

``readout=ids`` (integer ``[T, k]``): ``decode`` / ``forward`` return the logits of only those
token ids at each position, ``[T, k]`` (the final RMSNorm, then only those columns of
``lm_head``), the values the full ``[T, V]`` logits hold there, as Whisper's ``readout``.

``precision="highest"`` (default) keeps float32 matmuls exact on GPU/TPU; ``dtype=bfloat16``
runs the matmuls in bfloat16 (norms and softmax stay float32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core import layers as L
from jaxasr_interp.core.engine import cast, check_readout, read_out, run_stack, unwrap
from jaxasr_interp.core.sites import Tap
from jaxasr_interp.qwen2_audio.config import QwenAudioDims, audio_tokens_for, encoder_lengths
from jaxasr_interp.qwen2_audio.sites import QWEN2_AUDIO
from jaxasr_interp.whisper.model import encoder_block, encoder_stem

_STATIC = ("dims", "capture", "dtype", "precision")


def rms_norm(x, p, eps: float):
    """Qwen2RMSNorm: statistics in float32, the scale applied in the compute dtype."""
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + eps)
    return p["scale"].astype(dtype) * y.astype(dtype)


def rope_tables(positions, d_head: int, theta: float):
    """cos, sin [T, dh] for integer positions [T] (transformers' default rotary embedding)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, d_head, 2, dtype=jnp.float32) / d_head))
    freqs = positions.astype(jnp.float32)[:, None] * inv_freq[None, :]
    emb = jnp.concatenate([freqs, freqs], -1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x, cos, sin):
    """Rotate x [T, heads, dh] by the tables [T, dh] (the "rotate half" convention)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos[:, None].astype(x.dtype) + rotated * sin[:, None].astype(x.dtype)


def qwen_block(x, p, tap: Tap, dims: QwenAudioDims, cos, sin, mask, cache=None, offset=None):
    """One Qwen2 decoder layer. With a KV ``cache`` (this layer's head-major ``k``/``v``
    [K, C, dh]) the new keys/values are written at ``offset`` and the cache is returned."""
    n_rep = dims.n_text_head // dims.n_kv_head
    x = tap("resid_pre", x)
    h = rms_norm(x, p["attn_norm"], dims.rms_eps)
    a = p["attn"]
    q = tap("attn.q", apply_rope(L.split_heads(L.linear(h, a["query"]), dims.n_text_head), cos, sin))
    k = tap("attn.k", apply_rope(L.split_heads(L.linear(h, a["key"]), dims.n_kv_head), cos, sin))
    v = tap("attn.v", L.split_heads(L.linear(h, a["value"]), dims.n_kv_head))
    k, v = L.head_major(k), L.head_major(v)
    if cache is not None:
        cache = {name: jax.lax.dynamic_update_slice(cache[name], new.astype(cache[name].dtype), (0, offset, 0))
                 for name, new in (("k", k), ("v", v))}
        k, v = cache["k"], cache["v"]
    # query head h reads key/value head h // n_rep, as transformers' repeat_kv
    pattern = tap("attn.pattern", L.attention_pattern(q, jnp.repeat(k, n_rep, 0), mask))
    z = tap("attn.z", L.attend(pattern, jnp.repeat(v, n_rep, 0)))
    x = tap("resid_mid", x + tap("attn_out", L.linear(z.reshape(z.shape[0], -1), a["out"])))
    h = rms_norm(x, p["mlp_norm"], dims.rms_eps)
    m = p["mlp"]
    hidden = tap("mlp.hidden", jax.nn.silu(L.linear(h, m["gate"])) * L.linear(h, m["up"]))
    return tap("resid_post", x + tap("mlp_out", L.linear(hidden, m["down"]))), cache


def _check_mel(mel, dims: QwenAudioDims):
    want = (dims.n_mels, dims.n_samples_frames)
    if tuple(np.shape(mel)) != want:
        raise ValueError(f"mel has shape {tuple(np.shape(mel))}, expected {want} [n_mels, frames] "
                         "(one utterance, padded to the full window; use jax.vmap for batches)")


def encode(params, mel, *, dims: QwenAudioDims, n_frames=None, edits=None, capture=(),
           dtype=jnp.float32, precision: str | None = "highest"):
    """Audio encoder + projector: mel [n_mels, 2 * n_audio_ctx] with ``n_frames`` valid frames
    (default: all) -> (audio embeddings [n_audio_ctx // 2, n_text_state], acts)."""
    _check_mel(mel, dims)
    n_frames = dims.n_samples_frames if n_frames is None else n_frames
    edits, capture = QWEN2_AUDIO.own("encoder", edits, capture)
    return _encode(unwrap(params), jnp.asarray(mel), jnp.asarray(n_frames, jnp.int32), dims=dims,
                   edits=edits, capture=capture, dtype=dtype, precision=precision)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _encode(params, mel, n_frames, *, dims, edits, capture, dtype, precision):
    with jax.default_matmul_precision(precision):
        p = cast(params["encoder"], dtype)
        # padded frames are hidden as keys (transformers' feature_attention_mask)
        valid = jnp.arange(dims.n_audio_ctx) < encoder_lengths(n_frames)[0]
        mask = jnp.broadcast_to(valid[None, :], (dims.n_audio_ctx, dims.n_audio_ctx))

        def head(x, tap):
            n = dims.n_audio_tokens  # AvgPool1d(2, stride 2): an odd last position is dropped
            x = tap("encoder.pooled", x[: 2 * n].reshape(n, 2, -1).mean(1))
            x = tap("encoder.ln_post", L.layer_norm(x, p["ln_post"]))
            return tap("encoder.proj", L.linear(x, cast(params["projector"], dtype)))

        x, acts, _ = run_stack(
            QWEN2_AUDIO, "encoder", p, mel, dims=dims, edits=edits, capture=capture, n_tokens=0,
            embed=lambda mel, tap: encoder_stem(mel, p, tap, dtype),
            block=lambda x, p_l, tap, _: (encoder_block(x, p_l, tap, dims.n_audio_head, mask), None),
            head=head)
    return x, acts


def merge_audio(embeds, tokens, audio_embeds, audio_token_id: int):
    """Write audio_embeds [A, D] in order at the ``<|AUDIO|>`` positions of embeds [T, D]."""
    is_audio = tokens == audio_token_id
    index = jnp.clip(jnp.cumsum(is_audio) - 1, 0, audio_embeds.shape[0] - 1)
    return jnp.where(is_audio[:, None], audio_embeds[index].astype(embeds.dtype), embeds)


def decode(params, tokens, audio_embeds, *, dims: QwenAudioDims, edits=None, capture=(),
           cache=None, offset=0, readout=None, dtype=jnp.float32, precision: str | None = "highest"):
    """The LLM: tokens [T] (``audio_embeds`` [A, Dt] written at the audio tokens; None for
    none) -> (logits [T, V] float32, acts), or with a KV ``cache`` (:mod:`.decoding`) ->
    (logits, acts, new cache) for the tokens at positions ``offset ...``; with ``readout``
    ids [T, k], logits [T, k] of only those ids."""
    if jnp.ndim(tokens) != 1:
        raise ValueError(f"tokens must be 1-D [T] for one utterance, got shape {jnp.shape(tokens)}; "
                         "use jax.vmap for batches")
    edits, capture = QWEN2_AUDIO.own("decoder", edits, capture)
    readout = check_readout(QWEN2_AUDIO, "decoder", readout, jnp.shape(tokens)[0], dims.n_vocab, edits)
    return _decode(unwrap(params), jnp.asarray(tokens), audio_embeds, readout, dims=dims, edits=edits,
                   capture=capture, cache=cache, offset=offset, dtype=dtype, precision=precision)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _decode(params, tokens, audio_embeds, readout, *, dims, edits, capture, cache, offset, dtype, precision):
    n_tokens = tokens.shape[0]
    with jax.default_matmul_precision(precision):
        p = cast(params["decoder"], dtype)
        positions = offset + jnp.arange(n_tokens)
        cos, sin = rope_tables(positions, dims.d_head, dims.rope_theta)
        key_len = n_tokens if cache is None else cache["k"].shape[-2]
        mask = jnp.arange(key_len)[None, :] <= positions[:, None]

        def embed(tokens, tap):
            x = p["token_embedding"]["embedding"][tokens]
            if audio_embeds is not None:
                x = merge_audio(x, tokens, audio_embeds, dims.audio_token_id)
            return tap("decoder.embed", x)

        def head(x, tap, readout=None):
            x = tap("decoder.ln_final", rms_norm(x, p["norm"], dims.rms_eps))
            if readout is not None:  # lm_head has no bias: only its columns `readout` are read
                return tap("logits", read_out(x, p["lm_head"]["kernel"], readout, axis=1))
            return tap("logits", L.linear(x, p["lm_head"]).astype(jnp.float32))

        logits, acts, cache = run_stack(
            QWEN2_AUDIO, "decoder", p, tokens, dims=dims, edits=edits, capture=capture,
            n_tokens=n_tokens, embed=embed, head=head, xs=cache, readout=readout,
            block=lambda x, p_l, tap, cache_l: qwen_block(x, p_l, tap, dims, cos, sin, mask, cache_l, offset))
    return (logits, acts) if cache is None else (logits, acts, cache)


def _check_audio_tokens(tokens, n_frames, dims: QwenAudioDims) -> None:
    """Eagerly (concrete inputs only): as many ``<|AUDIO|>`` tokens as audio embeddings."""
    if isinstance(tokens, jax.core.Tracer) or isinstance(n_frames, jax.core.Tracer):
        return
    have = int(np.sum(np.asarray(tokens) == dims.audio_token_id))
    want = audio_tokens_for(dims.n_samples_frames if n_frames is None else int(n_frames))
    if have != want:
        raise ValueError(f"tokens hold {have} audio tokens ({dims.audio_token_id}) but the audio gives "
                         f"{want} embeddings; build the prompt with prompt.prompt_ids")


def forward(params, mel, tokens, *, dims: QwenAudioDims, n_frames=None, edits=None, capture=(),
            readout=None, dtype=jnp.float32, precision: str | None = "highest"):
    """Teacher-forced pass: mel [n_mels, frames] (``n_frames`` valid), tokens [T] with the
    audio tokens expanded -> (logits [T, V] or, with ``readout`` ids, [T, k]; acts: captured
    sites, block sites ``[L, ...]``)."""
    _check_audio_tokens(tokens, n_frames, dims)
    if readout is not None and jnp.ndim(tokens) == 1:  # a bad readout fails before the encoder runs
        check_readout(QWEN2_AUDIO, "decoder", readout, jnp.shape(tokens)[0], dims.n_vocab, edits)
    embeds, enc_acts = encode(params, mel, dims=dims, n_frames=n_frames, edits=edits,
                              capture=capture, dtype=dtype, precision=precision)
    logits, dec_acts = decode(params, tokens, embeds, dims=dims, edits=edits, capture=capture,
                              readout=readout, dtype=dtype, precision=precision)
    return logits, {**enc_acts, **dec_acts}
