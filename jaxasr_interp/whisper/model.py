"""Whisper as pure functions: ``encode``, ``decode``, ``forward``.

The core is unbatched (one utterance; ``jax.vmap`` makes batches). Each stack's blocks run
under ``lax.scan`` over the stacked layer axis of the parameters, so compile time does not grow
with depth and per-layer activations come out stacked ``[L, ...]``.

Whisper is one :class:`~jaxasr_interp.core.family.Family` (``WHISPER``, in :mod:`.sites`) run
by the engine (:func:`jaxasr_interp.core.engine.run_stack`): this module holds only what is
Whisper's own, its blocks, the convolution stem, the embeddings and the tied read-out. Every
site passes through a :class:`~jaxasr_interp.core.sites.Tap`, which applies the edits given
for it and records it when asked to capture. Edits reach only the stack they name: a decoder
edit never recompiles or reruns the encoder.

``start_layer=l`` resumes a stack at block ``l`` (``0`` included): the input is then that
layer's ``resid_pre`` (``[S, D]`` for the encoder, ``[T, D]`` for the decoder) instead of a mel
or tokens (``start_layer=None``, the default: the full pass). An edit at
layer ``l`` leaves layers ``0..l-1`` as in the clean run, so a patch needs only the layers
from ``l`` on; captured block sites are then stacked over layers ``l..L-1``.

``readout=ids`` (integer ``[T, k]``) makes ``decode`` / ``forward`` return the logits of only
those token ids at each position, ``[T, k]`` (``ln_final`` then a dot with the gathered rows of
the tied embedding: the values the full logits hold there), so a vmapped sweep never pays the
``[T, n_vocab]`` projection; the ``logits`` site then holds ``[T, k]`` too.

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
from jaxasr_interp.core.engine import cast, check_readout, check_start, read_out, run_stack, unwrap
from jaxasr_interp.core.sites import Tap
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.sites import WHISPER

Params = Mapping[str, Any]


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


def encoder_stem(mel, p, tap: Tap, dtype):
    """Two GELU convolutions (the second halves the frames) plus positions: ``encoder.embed``."""
    x = L.gelu(L.conv1d(mel.T.astype(dtype), p["conv1"], stride=1))
    x = L.gelu(L.conv1d(x, p["conv2"], stride=2))
    return tap("encoder.embed", x + p["positional_embedding"]["embedding"][: x.shape[0]])


def _check_input(x, dims: Dims, stack: str, start_layer: int, edits, capture):
    if start_layer is not None:
        want = (dims.n_audio_ctx, dims.n_audio_state) if stack == "encoder" else (None, dims.n_text_state)
        check_start(WHISPER, stack, x, want, start_layer, edits, capture, dims)
    elif stack == "encoder" and tuple(jnp.shape(x)) != (dims.n_mels, dims.n_samples_frames):
        raise ValueError(f"mel has shape {tuple(jnp.shape(x))}, expected {(dims.n_mels, dims.n_samples_frames)} "
                         "[n_mels, frames] for this model (one utterance; use jax.vmap for batches, "
                         "log_mel to pad to 30 s)")
    elif stack == "decoder" and jnp.ndim(x) != 1:
        raise ValueError(f"tokens must be 1-D [T] for one utterance, got shape {jnp.shape(x)}; "
                         "use jax.vmap for batches")


_STATIC = ("dims", "capture", "dtype", "precision", "start_layer", "remat")


def encode(params: Params, mel, *, dims: Dims, edits=None, capture=(), start_layer: int | None = None,
           dtype=jnp.float32, precision: str | None = "highest", remat: bool = False):
    """Encoder: mel [n_mels, 2 * n_audio_ctx] (or ``resid_pre[start_layer]`` [S, D]) ->
    (audio features [n_audio_ctx, D], acts). ``remat``: each block rematerialised in a backward
    pass (memory of one layer's attention instead of all; :func:`.core.engine.run_blocks`)."""
    edits, capture = WHISPER.own("encoder", edits, capture)
    _check_input(mel, dims, "encoder", start_layer, edits, capture)
    return _encode(unwrap(params), mel, dims=dims, edits=edits, capture=capture,
                   start_layer=start_layer, dtype=dtype, precision=precision, remat=remat)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _encode(params, mel, *, dims, edits, capture, start_layer, dtype, precision, remat=False):
    with jax.default_matmul_precision(precision):
        p = cast(params["encoder"], dtype)
        x, acts, _ = run_stack(
            WHISPER, "encoder", p, mel if start_layer is None else mel.astype(dtype), dims=dims,
            edits=edits, capture=capture, n_tokens=0, start_layer=start_layer,
            embed=lambda mel, tap: encoder_stem(mel, p, tap, dtype),
            block=lambda x, p_l, tap, _: (encoder_block(x, p_l, tap, dims.n_audio_head), None),
            head=lambda x, tap: tap("encoder.ln_post", L.layer_norm(x, p["ln_post"])), remat=remat)
    return x, acts


def decode(params: Params, tokens, audio_features, *, dims: Dims, edits=None, capture=(),
           cache=None, offset=0, start_layer: int | None = None, cross=None, readout=None,
           dtype=jnp.float32, precision: str | None = "highest", remat: bool = False):
    """Decoder: tokens [T] (or ``resid_pre[start_layer]`` [T, D]) -> (logits [T, n_vocab] in
    float32, acts), or with a KV ``cache`` (see :mod:`.decoding`) -> (logits, acts, new cache)
    for tokens at positions ``offset...``. ``cross``: every layer's precomputed cross-attention
    keys and values (:func:`cross_kv_stack`), shared by the patches of a sweep; then
    ``audio_features`` may be None and cross-attention k/v can be neither edited nor captured.
    ``readout``: token ids [T, k] -> logits [T, k] of only those ids (module docstring).
    ``remat``: each block rematerialised in a backward pass (as :func:`encode`)."""
    edits, capture = WHISPER.own("decoder", edits, capture)
    _check_input(tokens, dims, "decoder", start_layer, edits, capture)
    if cross is not None and WHISPER.audio_sites & (set(edits) | set(capture)):
        raise ValueError("cross-attention k/v are precomputed (cross=...): pass audio_features "
                         "instead to edit or capture them")
    readout = check_readout(WHISPER, "decoder", readout, jnp.shape(tokens)[0], dims.n_vocab, edits)
    return _decode(unwrap(params), jnp.asarray(tokens), audio_features, cross, readout, dims=dims,
                   edits=edits, capture=capture, cache=cache, offset=offset,
                   start_layer=start_layer, dtype=dtype, precision=precision, remat=remat)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _decode(params, tokens, audio_features, cross, readout, *, dims, edits, capture, cache, offset,
            start_layer, dtype, precision, remat=False):
    n_tokens = tokens.shape[0]
    with jax.default_matmul_precision(precision):
        p = cast(params["decoder"], dtype)
        query_pos = offset + jnp.arange(n_tokens)
        key_len = n_tokens if cache is None else cache["self_k"][0].shape[-2]
        mask = jnp.arange(key_len)[None, :] <= query_pos[:, None]
        if audio_features is not None:
            audio_features = audio_features.astype(dtype)

        def embed(tokens, tap):
            positions = jax.lax.dynamic_slice_in_dim(p["positional_embedding"]["embedding"], offset, n_tokens)
            return tap("decoder.embed", p["token_embedding"]["embedding"][tokens] + positions)

        def block(x, p_l, tap, xs_l):
            if cache is None:
                return decoder_block(x, p_l, tap, dims.n_text_head, audio_features, mask, cross=xs_l)
            return decoder_block(x, p_l, tap, dims.n_text_head, None, mask, xs_l, offset)

        def head(x, tap, readout=None):
            x = tap("decoder.ln_final", L.layer_norm(x, p["ln"]))
            table = p["token_embedding"]["embedding"]
            if readout is not None:
                return tap("logits", read_out(x, table, readout))
            return tap("logits", (x @ table.T).astype(jnp.float32))

        if cache is None:
            xs = cross
        else:  # unrolled over layers, the cache a tuple of per-layer arrays (see .decoding)
            xs = [{name: cache[name][i] for name in cache} for i in range(dims.n_text_layer)]
        logits, acts, outs = run_stack(
            WHISPER, "decoder", p, tokens if start_layer is None else tokens.astype(dtype), dims=dims,
            edits=edits, capture=capture, n_tokens=n_tokens, start_layer=start_layer,
            embed=embed, block=block, head=head, xs=xs, unroll=cache is not None, readout=readout,
            remat=remat)
    if cache is None:
        return logits, acts
    outs = [{**xs_l, **out} for xs_l, out in zip(xs[start_layer or 0:], outs)]
    return logits, acts, {name: tuple(o[name] for o in outs) for name in cache}


def forward(params: Params, mel, tokens, *, dims: Dims, edits=None, capture=(), readout=None,
            dtype=jnp.float32, precision: str | None = "highest", remat: bool = False):
    """Teacher-forced pass: mel [n_mels, frames], tokens [T] -> (logits [T, n_vocab], acts);
    with ``readout`` ids [T, k], logits [T, k] of only those ids. ``remat``: every block
    rematerialised in a backward pass (see :func:`encode`).

    ``acts`` maps each captured site name (patterns expanded) to its value; block sites are
    stacked over layers ``[L, ...]``.
    """
    if readout is not None and jnp.ndim(tokens) == 1:  # a bad readout fails before the encoder runs
        check_readout(WHISPER, "decoder", readout, jnp.shape(tokens)[0], dims.n_vocab, edits)
    audio_features, enc_acts = encode(params, mel, dims=dims, edits=edits, capture=capture,
                                      dtype=dtype, precision=precision, remat=remat)
    logits, dec_acts = decode(params, tokens, audio_features, dims=dims, edits=edits,
                              capture=capture, readout=readout, dtype=dtype, precision=precision,
                              remat=remat)
    return logits, {**enc_acts, **dec_acts}


def encode_from(params: Params, resid, *, start_layer: int, dims: Dims, **kwargs):
    """Encoder blocks ``start_layer..`` from ``resid`` [S, D]: :func:`encode` with ``start_layer``."""
    return encode(params, resid, start_layer=start_layer, dims=dims, **kwargs)


def decode_from(params: Params, resid, audio_features, *, start_layer: int, dims: Dims, **kwargs):
    """Decoder blocks ``start_layer..`` from ``resid`` [T, D]: :func:`decode` with ``start_layer``."""
    return decode(params, resid, audio_features, start_layer=start_layer, dims=dims, **kwargs)


def cross_kv_stack(params: Params, audio_features, *, dims: Dims, dtype=jnp.float32,
                   precision: str | None = "highest"):
    """Every decoder layer's cross-attention keys and values, head-major ``([L, H, S, dh]``
    twice): computed once, they serve every patch of a sweep through ``decode(cross=...)``."""
    with jax.default_matmul_precision(precision):
        p = cast(unwrap(params)["decoder"]["blocks"]["cross_attn"], dtype)
        af = audio_features.astype(dtype)
        return jax.lax.map(lambda p_l: cross_kv(p_l, af, Tap("decoder", {}, ()), dims.n_text_head), p)
