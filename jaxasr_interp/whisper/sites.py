"""The site vocabulary: every named point of the forward pass that can be captured or edited.

A site key names no layer: ``"decoder.cross_attn_out"``. For block sites the layer is the
leading axis of the captured array (and of an edit's data), so captures come out ``[L, ...]``.
Shapes below are for one utterance (the core is unbatched); ``T`` is the number of tokens,
``S`` the number of audio positions (``n_audio_ctx``), ``F`` the mel frames, ``H`` heads,
``dh`` the head width, ``D`` the model width.

Encoder, per block ``l`` (in computation order):

===================  ===============  =====================================================
``resid_pre``        [S, D]           block input
``attn.q/k/v``       [S, H, dh]       projections, before the ``dh ** -0.25`` scaling
``attn.pattern``     [H, S, S]        softmax attention weights
``attn.z``           [S, H, dh]       weighted values, before the output projection
``attn_out``         [S, D]           after the output projection, before the residual add
``resid_mid``        [S, D]           ``resid_pre + attn_out``
``mlp.hidden``       [S, F]           after GELU (F = ``n_audio_ffn``, 4D in every released model)
``mlp_out``          [S, D]           after the second linear, before the residual add
``resid_post``       [S, D]           block output (``resid_mid + mlp_out``)
===================  ===============  =====================================================

Decoder, per block: ``resid_pre``; ``self_attn.q/k/v`` [T, H, dh], ``self_attn.pattern``
[H, T, T], ``self_attn.z``, ``self_attn_out``, ``resid_mid``; ``cross_attn.q`` [T, H, dh],
``cross_attn.k/v`` [S, H, dh], ``cross_attn.pattern`` [H, T, S], ``cross_attn.z`` [T, H, dh],
``cross_attn_out``, ``resid_mid_cross``; ``mlp.hidden`` [T, F] (F = ``n_text_ffn``), ``mlp_out``, ``resid_post``.

Whole-stack sites: ``encoder.embed`` [S, D] (after convs + positions), ``encoder.ln_post``
[S, D] (the encoder output), ``decoder.embed`` [T, D] (tokens + positions),
``decoder.ln_final`` [T, D], ``logits`` [T, n_vocab].
"""

from __future__ import annotations

from jaxasr_interp.core.family import Family
from jaxasr_interp.core.sites import SiteError, Tap, axes  # noqa: F401  (re-exported)
from jaxasr_interp.core import sites as core_sites

ENCODER_BLOCK_SITES = (
    "resid_pre", "attn.q", "attn.k", "attn.v", "attn.pattern", "attn.z", "attn_out",
    "resid_mid", "mlp.hidden", "mlp_out", "resid_post")
DECODER_BLOCK_SITES = (
    "resid_pre", "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.pattern", "self_attn.z",
    "self_attn_out", "resid_mid", "cross_attn.q", "cross_attn.k", "cross_attn.v",
    "cross_attn.pattern", "cross_attn.z", "cross_attn_out", "resid_mid_cross", "mlp.hidden",
    "mlp_out", "resid_post")
ENCODER_SITES = ("encoder.embed",) + tuple(f"encoder.{s}" for s in ENCODER_BLOCK_SITES) + ("encoder.ln_post",)
DECODER_SITES = ("decoder.embed",) + tuple(f"decoder.{s}" for s in DECODER_BLOCK_SITES) + (
    "decoder.ln_final", "logits")
ALL_SITES = ENCODER_SITES + DECODER_SITES
BLOCK_SITES = frozenset(f"encoder.{s}" for s in ENCODER_BLOCK_SITES) | frozenset(
    f"decoder.{s}" for s in DECODER_BLOCK_SITES)
AUDIO_SITES = frozenset({"decoder.cross_attn.k", "decoder.cross_attn.v"})


def _shape(name: str, dims, n_tokens: int) -> tuple[int, ...]:
    encoder = name.startswith("encoder.")
    d = dims.n_audio_state if encoder else dims.n_text_state
    n_head = dims.n_audio_head if encoder else dims.n_text_head
    pos = dims.n_audio_ctx if encoder or name in AUDIO_SITES else n_tokens
    if name == "logits":
        return (n_tokens, dims.n_vocab)
    if name.endswith(".pattern"):
        key = n_tokens if name == "decoder.self_attn.pattern" else dims.n_audio_ctx
        return (n_head, pos, key)
    if name.rsplit(".", 1)[-1] in ("q", "k", "v", "z"):
        return (pos, n_head, d // n_head)
    if name.endswith("mlp.hidden"):
        return (pos, dims.n_audio_ffn if encoder else dims.n_text_ffn)
    return (pos, d)


WHISPER = Family(
    what="site",
    stacks={"encoder": ENCODER_SITES, "decoder": DECODER_SITES},
    block_sites=BLOCK_SITES,
    shape_of=_shape,
    layers={"encoder": lambda dims: dims.n_audio_layer, "decoder": lambda dims: dims.n_text_layer},
    audio_sites=AUDIO_SITES,
)


def unknown_site(name: str, vocabulary: tuple[str, ...] = ALL_SITES, what: str = "site") -> SiteError:
    """The error for a name outside ``vocabulary`` (Whisper's sites unless another model's)."""
    return core_sites.unknown_site(name, vocabulary, what)


# The family's vocabulary functions under the names this module has always had.
expand = WHISPER.expand        # names and glob patterns -> site names, in model order
shape = WHISPER.shape          # per-layer shape of a site for n_tokens tokens
n_layers = WHISPER.n_layers    # layers of a block site, None for whole-stack sites
