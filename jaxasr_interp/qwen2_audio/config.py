"""Qwen2-Audio dimensions: one frozen, hashable dataclass (a static argument under ``jit``).

The audio-encoder fields have the same names as Whisper's :class:`~jaxasr_interp.config.Dims`
(``n_mels``, ``n_audio_ctx``, ``n_audio_state``, ``n_audio_head``, ``n_audio_layer``), so the
Whisper encoder blocks run on them unchanged. The language-model fields describe the Qwen2
decoder: grouped-query attention (``n_kv_head`` key/value heads shared by
``n_text_head // n_kv_head`` query heads each), a SwiGLU MLP of width ``n_text_ffn``, RMSNorm
(``rms_eps``) and rotary positions (``rope_theta``). The audio encoder's MLP width
``n_audio_ffn`` (``encoder_ffn_dim``) is a keyword field whose default, 0, means Whisper's
``4 * n_audio_state``, resolved when the dims are made (so they compare and hash as before).

``dims_from_hf_config`` reads a transformers ``Qwen2AudioConfig`` (or a ``config.json`` dict,
parsed by transformers so that omitted fields take transformers' own defaults, as the real
checkpoint's ``config.json`` relies on).
"""

from __future__ import annotations

import dataclasses
from typing import Any

_INTS = ("n_mels", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_vocab",
         "n_text_state", "n_text_head", "n_kv_head", "n_text_layer", "n_text_ffn", "n_text_ctx",
         "n_audio_ffn")


@dataclasses.dataclass(frozen=True)
class QwenAudioDims:
    n_mels: int
    n_audio_ctx: int          # encoder positions after the stride-2 conv (1500 for 30 s)
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_state: int
    n_text_head: int
    n_kv_head: int
    n_text_layer: int
    n_text_ffn: int
    n_text_ctx: int           # max_position_embeddings: the longest prompt + generation
    audio_token_id: int
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    n_audio_ffn: int = dataclasses.field(default=0, kw_only=True)  # 0: 4 * n_audio_state

    def __post_init__(self):
        if type(self.n_audio_ffn) is int and self.n_audio_ffn == 0 and isinstance(self.n_audio_state, int):
            object.__setattr__(self, "n_audio_ffn", 4 * self.n_audio_state)  # frozen: resolved once
        for name in _INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"QwenAudioDims.{name} must be a positive int, got {value!r}")
        if self.n_audio_state % self.n_audio_head:
            raise ValueError(f"n_audio_state={self.n_audio_state} is not divisible by n_audio_head={self.n_audio_head}")
        if self.n_text_state % self.n_text_head or self.n_text_head % self.n_kv_head:
            raise ValueError(f"n_text_state={self.n_text_state}, n_text_head={self.n_text_head} and "
                             f"n_kv_head={self.n_kv_head} must divide each other (state % heads, heads % kv heads)")
        if self.d_head % 2:
            raise ValueError(f"rotary positions need an even head width, got {self.d_head}")
        if not 0 <= self.audio_token_id < self.n_vocab:
            raise ValueError(f"audio_token_id={self.audio_token_id} is outside the vocabulary of {self.n_vocab}")

    @property
    def d_head(self) -> int:
        return self.n_text_state // self.n_text_head

    @property
    def n_samples_frames(self) -> int:
        """Mel frames the encoder takes: two per encoder position (conv2 has stride 2)."""
        return 2 * self.n_audio_ctx

    @property
    def n_audio_tokens(self) -> int:
        """Audio embeddings after the stride-2 average pooling (750 for 30 s)."""
        return self.n_audio_ctx // 2

    def replace(self, **changes) -> "QwenAudioDims":
        return dataclasses.replace(self, **changes)


def encoder_lengths(n_frames):
    """Valid mel frames -> (valid encoder positions, audio tokens), as transformers'
    ``_get_feat_extract_output_lengths`` (works on ints and on integer arrays)."""
    positions = (n_frames - 1) // 2 + 1
    return positions, (positions - 2) // 2 + 1


def audio_tokens_for(n_frames: int) -> int:
    """How many ``<|AUDIO|>`` tokens stand for an utterance of ``n_frames`` valid mel frames."""
    return int(encoder_lengths(int(n_frames))[1])


# Qwen/Qwen2-Audio-7B(-Instruct): Whisper-large-v3-sized encoder, Qwen-7B decoder (no GQA:
# 32 key/value heads), untied lm_head; values as in transformers' defaults and the hub config.
QWEN2_AUDIO_7B = QwenAudioDims(
    n_mels=128, n_audio_ctx=1500, n_audio_state=1280, n_audio_head=20, n_audio_layer=32,
    n_vocab=156032, n_text_state=4096, n_text_head=32, n_kv_head=32, n_text_layer=32,
    n_text_ffn=11008, n_text_ctx=8192, audio_token_id=151646, rope_theta=10000.0, rms_eps=1e-5)


def _hf_config(cfg: Any):
    """A transformers ``Qwen2AudioConfig`` from itself or from a ``config.json`` dict."""
    import transformers
    if isinstance(cfg, dict):
        if cfg.get("model_type") != "qwen2_audio":
            raise ValueError(f"config.json has model_type {cfg.get('model_type')!r}, expected 'qwen2_audio'")
        cfg = transformers.Qwen2AudioConfig.from_dict(cfg)
    return cfg


def dims_from_hf_config(cfg: Any) -> QwenAudioDims:
    cfg = _hf_config(cfg)
    a, t = cfg.audio_config, cfg.text_config
    if a.activation_function != "gelu" or a.scale_embedding:
        raise ValueError("unsupported audio encoder: expected Whisper's (gelu, no embedding scale)")
    rope = dict(getattr(t, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default" or getattr(t, "sliding_window", None) or t.hidden_act != "silu":
        raise ValueError(f"unsupported Qwen2 decoder: rope {rope}, sliding window "
                         f"{getattr(t, 'sliding_window', None)}, activation {t.hidden_act}")
    n_heads = t.num_attention_heads
    if (getattr(t, "head_dim", None) or t.hidden_size // n_heads) * n_heads != t.hidden_size:
        raise ValueError("unsupported Qwen2 decoder: head_dim * heads != hidden_size")
    return QwenAudioDims(
        n_mels=a.num_mel_bins, n_audio_ctx=a.max_source_positions, n_audio_state=a.d_model,
        n_audio_head=a.encoder_attention_heads, n_audio_layer=a.encoder_layers,
        n_audio_ffn=a.encoder_ffn_dim, n_vocab=t.vocab_size, n_text_state=t.hidden_size, n_text_head=n_heads,
        n_kv_head=t.num_key_value_heads, n_text_layer=t.num_hidden_layers,
        n_text_ffn=t.intermediate_size, n_text_ctx=t.max_position_embeddings,
        audio_token_id=cfg.audio_token_index, rope_theta=float(rope.get("rope_theta", 10000.0)),
        rms_eps=float(t.rms_norm_eps))


def hf_config_dict(dims: QwenAudioDims, tie_word_embeddings: bool = False) -> dict:
    """``Qwen2AudioConfig`` keyword arguments for these dims (eager attention for parity)."""
    return dict(
        audio_config=dict(
            model_type="qwen2_audio_encoder", num_mel_bins=dims.n_mels,
            max_source_positions=dims.n_audio_ctx, d_model=dims.n_audio_state,
            encoder_attention_heads=dims.n_audio_head, encoder_layers=dims.n_audio_layer,
            encoder_ffn_dim=dims.n_audio_ffn),
        text_config=dict(
            model_type="qwen2", vocab_size=dims.n_vocab, hidden_size=dims.n_text_state,
            num_attention_heads=dims.n_text_head, num_key_value_heads=dims.n_kv_head,
            num_hidden_layers=dims.n_text_layer, intermediate_size=dims.n_text_ffn,
            max_position_embeddings=dims.n_text_ctx, rms_norm_eps=dims.rms_eps,
            rope_parameters={"rope_type": "default", "rope_theta": dims.rope_theta},
            tie_word_embeddings=tie_word_embeddings),
        audio_token_index=dims.audio_token_id)
