"""The Qwen2-Audio site vocabulary: the Whisper encoder's sites, plus the LLM decoder's.

Same conventions as :mod:`jaxasr_interp.sites`: a key names no layer; block sites are captured
and edited with a leading layer axis ``[L, ...]``; shapes are for one utterance. ``S`` encoder
positions (``n_audio_ctx``), ``A = S // 2`` pooled audio embeddings, ``T`` LLM tokens (audio
embeddings included), ``H`` query heads, ``K`` key/value heads, ``dh`` the head width.

Audio encoder, per block: exactly Whisper's (``encoder.resid_pre``, ``encoder.attn.q/k/v``
[S, H, dh], ``encoder.attn.pattern`` [H, S, S], ``encoder.attn.z``, ``encoder.attn_out``,
``encoder.resid_mid``, ``encoder.mlp.hidden`` [S, F] (F = ``n_audio_ffn``), ``encoder.mlp_out``,
``encoder.resid_post``). Whole encoder: ``encoder.embed`` [S, D] (convs + positions),
``encoder.pooled`` [A, D] (average pooling, stride 2), ``encoder.ln_post`` [A, D] (final
LayerNorm), ``encoder.proj`` [A, Dt] (the projector output: the audio embeddings the LLM reads).

LLM decoder, per block (in computation order):

===================  ============  ============================================================
``resid_pre``        [T, Dt]       block input
``attn.q``           [T, H, dh]    queries *after* the rotary embedding (what the scores use)
``attn.k``           [T, K, dh]    keys after the rotary embedding (what the KV cache holds)
``attn.v``           [T, K, dh]    values
``attn.pattern``     [H, T, T]     softmax weights, causal (query head h reads kv head h // (H/K))
``attn.z``           [T, H, dh]    weighted values, before the output projection
``attn_out``         [T, Dt]       after the output projection, before the residual add
``resid_mid``        [T, Dt]       ``resid_pre + attn_out``
``mlp.hidden``       [T, F]        ``silu(gate) * up``: the input of the down projection
``mlp_out``          [T, Dt]       after the down projection, before the residual add
``resid_post``       [T, Dt]       block output
===================  ============  ============================================================

Whole decoder: ``decoder.embed`` [T, Dt] (token embeddings with the audio embeddings written
at the ``<|AUDIO|>`` positions), ``decoder.ln_final`` [T, Dt] (final RMSNorm), ``logits``
[T, V].
"""

from __future__ import annotations

from jaxasr_interp.core.family import Family
from jaxasr_interp.core.sites import SiteError
from jaxasr_interp.whisper.sites import ENCODER_BLOCK_SITES

DECODER_BLOCK_SITES = ("resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z",
                       "attn_out", "resid_mid", "mlp.hidden", "mlp_out", "resid_post")
ENCODER_SITES = ("encoder.embed",) + tuple(f"encoder.{s}" for s in ENCODER_BLOCK_SITES) + (
    "encoder.pooled", "encoder.ln_post", "encoder.proj")
DECODER_SITES = ("decoder.embed",) + tuple(f"decoder.{s}" for s in DECODER_BLOCK_SITES) + (
    "decoder.ln_final", "logits")
ALL_SITES = ENCODER_SITES + DECODER_SITES
BLOCK_SITES = frozenset(f"encoder.{s}" for s in ENCODER_BLOCK_SITES) | frozenset(
    f"decoder.{s}" for s in DECODER_BLOCK_SITES)


def _shape(name: str, dims, n_tokens: int) -> tuple[int, ...]:
    last = name.rsplit(".", 1)[-1]
    if name.startswith("encoder."):
        s, d, h = dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head
        if name in ("encoder.pooled", "encoder.ln_post"):
            return (dims.n_audio_tokens, d)
        if name == "encoder.proj":
            return (dims.n_audio_tokens, dims.n_text_state)
        if name.endswith(".pattern"):
            return (h, s, s)
        if last in ("q", "k", "v", "z"):
            return (s, h, d // h)
        return (s, dims.n_audio_ffn if name.endswith("mlp.hidden") else d)
    t, d = n_tokens, dims.n_text_state
    if name == "logits":
        return (t, dims.n_vocab)
    if name.endswith(".pattern"):
        return (dims.n_text_head, t, t)
    if last in ("q", "z"):
        return (t, dims.n_text_head, dims.d_head)
    if last in ("k", "v"):
        return (t, dims.n_kv_head, dims.d_head)
    return (t, dims.n_text_ffn if name.endswith("mlp.hidden") else d)


QWEN2_AUDIO = Family(
    what="Qwen2-Audio site",
    stacks={"encoder": ENCODER_SITES, "decoder": DECODER_SITES},
    block_sites=BLOCK_SITES,
    shape_of=_shape,
    layers={"encoder": lambda dims: dims.n_audio_layer, "decoder": lambda dims: dims.n_text_layer},
)


def unknown_site(name: str) -> SiteError:
    return QWEN2_AUDIO.unknown(name)


# The family's vocabulary functions under the names this module has always had.
expand = QWEN2_AUDIO.expand        # names and glob patterns -> site names, in model order
shape = QWEN2_AUDIO.shape          # per-layer shape of a site for n_tokens tokens
n_layers = QWEN2_AUDIO.n_layers    # layers of a block site, None for whole-stack sites
