"""Model dimensions: one frozen dataclass, static under ``jit``.

``Dims`` mirrors openai/whisper's ``ModelDimensions``. It is hashable so it can be a static
argument of jitted functions. Presets cover every public Whisper size; ``Dims.from_params``
recovers the dimensions from a parameter tree (head counts are not visible in shapes, so they
are taken from the checkpoint when it records them and otherwise from Whisper's fixed
64-dimensional heads).

The MLP widths ``n_audio_ffn`` / ``n_text_ffn`` (transformers' ``encoder_ffn_dim`` /
``decoder_ffn_dim``) are keyword fields whose default, 0, means Whisper's ``4 * state``: it is
resolved when the ``Dims`` is made, so ``Dims(...)`` without them equals (and hashes as) the same
``Dims`` with the widths spelled out, and the field always holds the real width.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# Every released Whisper model uses 64-dimensional attention heads.
WHISPER_HEAD_DIM = 64


@dataclasses.dataclass(frozen=True)
class Dims:
    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int
    n_audio_ffn: int = dataclasses.field(default=0, kw_only=True)  # 0: 4 * n_audio_state
    n_text_ffn: int = dataclasses.field(default=0, kw_only=True)   # 0: 4 * n_text_state

    def __post_init__(self):
        for ffn, state in (("n_audio_ffn", self.n_audio_state), ("n_text_ffn", self.n_text_state)):
            if type(getattr(self, ffn)) is int and getattr(self, ffn) == 0 and isinstance(state, int):
                object.__setattr__(self, ffn, 4 * state)  # frozen: the default resolved once
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Dims.{name} must be a positive int, got {value!r}")
        if self.n_audio_state % self.n_audio_head:
            raise ValueError(f"n_audio_state={self.n_audio_state} is not divisible by n_audio_head={self.n_audio_head}")
        if self.n_text_state % self.n_text_head:
            raise ValueError(f"n_text_state={self.n_text_state} is not divisible by n_text_head={self.n_text_head}")

    @property
    def n_samples_frames(self) -> int:
        """Mel frames the encoder takes: two per audio context position (conv2 has stride 2)."""
        return 2 * self.n_audio_ctx

    @property
    def is_multilingual(self) -> bool:
        # English-only checkpoints have 51864 tokens; multilingual ones 51865 (+1 for large-v3).
        return self.n_vocab >= 51865

    def replace(self, **changes) -> "Dims":
        """A copy with ``changes``; the FFN widths are kept unless given (0: ``4 * state`` again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], n_audio_head: int | None = None,
                    n_text_head: int | None = None) -> "Dims":
        enc, dec = params["encoder"], params["decoder"]
        n_audio_state = enc["positional_embedding"]["embedding"].shape[1]
        n_text_state = dec["token_embedding"]["embedding"].shape[1]
        return cls(  # mlp1 kernels are stacked [L, D, ffn]
            n_mels=enc["conv1"]["kernel"].shape[1],
            n_audio_ctx=enc["positional_embedding"]["embedding"].shape[0],
            n_audio_state=n_audio_state,
            n_audio_head=n_audio_head or n_audio_state // WHISPER_HEAD_DIM,
            n_audio_layer=enc["blocks"]["attn_ln"]["scale"].shape[0],
            n_vocab=dec["token_embedding"]["embedding"].shape[0],
            n_text_ctx=dec["positional_embedding"]["embedding"].shape[0],
            n_text_state=n_text_state,
            n_text_head=n_text_head or n_text_state // WHISPER_HEAD_DIM,
            n_text_layer=dec["blocks"]["attn_ln"]["scale"].shape[0],
            n_audio_ffn=enc["blocks"]["mlp1"]["kernel"].shape[-1],
            n_text_ffn=dec["blocks"]["mlp1"]["kernel"].shape[-1],
        )


def _preset(n_mels, state, heads, enc_layers, dec_layers, n_vocab):
    return Dims(n_mels=n_mels, n_audio_ctx=1500, n_audio_state=state, n_audio_head=heads,
                n_audio_layer=enc_layers, n_vocab=n_vocab, n_text_ctx=448, n_text_state=state,
                n_text_head=heads, n_text_layer=dec_layers)


PRESETS: dict[str, Dims] = {
    "tiny.en": _preset(80, 384, 6, 4, 4, 51864),
    "tiny": _preset(80, 384, 6, 4, 4, 51865),
    "base.en": _preset(80, 512, 8, 6, 6, 51864),
    "base": _preset(80, 512, 8, 6, 6, 51865),
    "small.en": _preset(80, 768, 12, 12, 12, 51864),
    "small": _preset(80, 768, 12, 12, 12, 51865),
    "medium.en": _preset(80, 1024, 16, 24, 24, 51864),
    "medium": _preset(80, 1024, 16, 24, 24, 51865),
    "large-v2": _preset(80, 1280, 20, 32, 32, 51865),
    "large-v3": _preset(128, 1280, 20, 32, 32, 51866),
    "large-v3-turbo": _preset(128, 1280, 20, 32, 4, 51866),
}


def preset(name: str) -> Dims:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown Whisper size {name!r}; known sizes: {', '.join(PRESETS)}") from None
