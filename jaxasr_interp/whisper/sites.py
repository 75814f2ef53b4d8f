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
``mlp.hidden``       [S, 4D]          after GELU
``mlp_out``          [S, D]           after the second linear, before the residual add
``resid_post``       [S, D]           block output (``resid_mid + mlp_out``)
===================  ===============  =====================================================

Decoder, per block: ``resid_pre``; ``self_attn.q/k/v`` [T, H, dh], ``self_attn.pattern``
[H, T, T], ``self_attn.z``, ``self_attn_out``, ``resid_mid``; ``cross_attn.q`` [T, H, dh],
``cross_attn.k/v`` [S, H, dh], ``cross_attn.pattern`` [H, T, S], ``cross_attn.z`` [T, H, dh],
``cross_attn_out``, ``resid_mid_cross``; ``mlp.hidden`` [T, 4D], ``mlp_out``, ``resid_post``.

Whole-stack sites: ``encoder.embed`` [S, D] (after convs + positions), ``encoder.ln_post``
[S, D] (the encoder output), ``decoder.embed`` [T, D] (tokens + positions),
``decoder.ln_final`` [T, D], ``logits`` [T, n_vocab].
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Iterable, Mapping

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


class SiteError(KeyError):
    """An unknown site name; the message lists the nearest valid names."""

    def __str__(self):  # KeyError would print the message quoted
        return self.args[0]


def unknown_site(name: str, vocabulary: tuple[str, ...] = ALL_SITES, what: str = "site") -> SiteError:
    """The error for a name outside ``vocabulary`` (Whisper's sites unless another model's)."""
    near = difflib.get_close_matches(name, vocabulary, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}?" if near else f"valid sites: {', '.join(vocabulary)}"
    return SiteError(f"unknown {what} {name!r}; {hint}")


def expand(patterns: Iterable[str] | str | None, vocabulary: tuple[str, ...] = ALL_SITES,
           what: str = "site") -> tuple[str, ...]:
    """Expand names and glob patterns (``"decoder.*_out"``) into site names, in model order."""
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = set()
    for pattern in patterns:
        matches = fnmatch.filter(vocabulary, pattern)
        if not matches:
            raise unknown_site(pattern, vocabulary, what)
        chosen.update(matches)
    return tuple(s for s in vocabulary if s in chosen)


def axes(name: str) -> tuple[str, ...]:
    """Axis roles of a site's value for one layer: ``pos`` (tokens, or audio positions in the
    encoder and in cross-attention keys/values), ``head``, ``key`` (attended positions),
    ``feat`` (features)."""
    if name.endswith(".pattern"):
        return ("head", "pos", "key")
    if name.rsplit(".", 1)[-1] in ("q", "k", "v", "z"):
        return ("pos", "head", "feat")
    return ("pos", "feat")


def shape(name: str, dims, n_tokens: int) -> tuple[int, ...]:
    """Per-layer shape of a site's value (no layer axis) for ``n_tokens`` decoder tokens."""
    if name not in ALL_SITES:
        raise unknown_site(name)
    encoder = name.startswith("encoder.")
    d = dims.n_audio_state if encoder else dims.n_text_state
    n_head = dims.n_audio_head if encoder else dims.n_text_head
    audio = name.startswith("encoder.") or name in ("decoder.cross_attn.k", "decoder.cross_attn.v")
    pos = dims.n_audio_ctx if audio else n_tokens
    if name == "logits":
        return (n_tokens, dims.n_vocab)
    if name.endswith(".pattern"):
        key = n_tokens if name == "decoder.self_attn.pattern" else dims.n_audio_ctx
        return (n_head, pos, key)
    if name.rsplit(".", 1)[-1] in ("q", "k", "v", "z"):
        return (pos, n_head, d // n_head)
    return (pos, 4 * d if name.endswith("mlp.hidden") else d)


def n_layers(name: str, dims) -> int | None:
    """Layers of a block site (the leading axis of its captures and edits), None otherwise."""
    if name not in BLOCK_SITES:
        return None
    return dims.n_audio_layer if name.startswith("encoder.") else dims.n_text_layer


def split_layer(name: str) -> tuple[str, int | None]:
    """``"decoder.3.cross_attn_out"`` -> ``("decoder.cross_attn_out", 3)``."""
    parts = name.split(".")
    if len(parts) > 2 and parts[1].isdigit():
        return ".".join([parts[0]] + parts[2:]), int(parts[1])
    return name, None


class Tap:
    """Applies edits and records captures at the sites of one stack (or one block).

    A Tap lives only while a function is traced: it is created inside the pure function, its
    ``captured`` dict is returned as data, and nothing outlives the call.
    """

    def __init__(self, prefix: str, edits: Mapping[str, Any] | None, capture: Iterable[str]):
        self.prefix = prefix
        self.edits = edits or {}
        self.capture = frozenset(capture)
        self.captured: dict[str, Any] = {}

    def __call__(self, local: str, value):
        name = f"{self.prefix}.{local}" if self.prefix else local
        edit = self.edits.get(name)
        if edit is not None:
            value = edit.apply(value)
        if name in self.capture:
            self.captured[name] = value
        return value
