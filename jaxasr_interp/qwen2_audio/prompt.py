"""Prompts for Qwen2-Audio: the chat template, audio-token expansion, and the audio input.

A prompt is built as transformers' ``Qwen2AudioProcessor`` builds it (the reference, tested):

1. :func:`chat_text` renders a conversation with the tokenizer's own ``chat_template`` when it
   has one (the real checkpoints do), else with :func:`render_chat`, this module's rendering of
   the Qwen2-Audio default template (system prompt, ``<|im_start|>role\\n ... <|im_end|>\\n``,
   ``Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>\\n`` per audio, the assistant header).
2. :func:`prompt_ids` replaces the i-th ``<|AUDIO|>`` by as many copies as the i-th audio has
   pooled embeddings (:func:`.config.audio_tokens_for` of its valid frames) and tokenizes.
3. :func:`audio_input`: 16 kHz audio -> the 128-mel log-mel of the 30-second window
   (:func:`jaxasr_interp.audio.log_mel`, tested against ``WhisperFeatureExtractor``) and the
   number of valid frames (``feature_attention_mask.sum()``).
"""

from __future__ import annotations

import numpy as np

from jaxasr_interp.qwen2_audio.config import audio_tokens_for

AUDIO_TOKEN = "<|AUDIO|>"
DEFAULT_SYSTEM = "You are a helpful assistant."
END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def render_chat(messages, add_generation_prompt: bool = True, system: str = DEFAULT_SYSTEM) -> str:
    """The Qwen2-Audio chat format. ``messages``: ``[{"role": ..., "content": str or
    [{"type": "audio", ...}, {"type": "text", "text": ...}]}]``."""
    parts, n_audio = [], 0
    for i, message in enumerate(messages):
        if i == 0 and message["role"] != "system":
            parts.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        parts.append(f"<|im_start|>{message['role']}\n")
        content = message["content"]
        if isinstance(content, str):
            parts.append(f"{content}<|im_end|>\n")
            continue
        for item in content:
            if item.get("type") == "audio" or "audio" in item or "audio_url" in item:
                n_audio += 1
                parts.append(f"Audio {n_audio}: <|audio_bos|>{AUDIO_TOKEN}<|audio_eos|>\n")
            elif "text" in item:
                parts.append(item["text"])
        parts.append("<|im_end|>\n")
    if add_generation_prompt:
        parts.append("<|im_start|>assistant\n")
    return "".join(parts)


def chat_text(messages, tokenizer=None, add_generation_prompt: bool = True) -> str:
    """The conversation as text, through the tokenizer's chat template when it has one."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                             tokenize=False)
    return render_chat(messages, add_generation_prompt)


def prompt_ids(tokenizer, text: str, n_frames) -> np.ndarray:
    """Token ids [T] of ``text`` with its i-th ``<|AUDIO|>`` expanded for ``n_frames[i]``
    valid mel frames. ``tokenizer``: a transformers tokenizer (or anything with ``encode``)."""
    n_frames = [n_frames] if np.ndim(n_frames) == 0 else list(n_frames)
    pieces = text.split(AUDIO_TOKEN)
    if len(pieces) - 1 != len(n_frames):
        raise ValueError(f"the prompt has {len(pieces) - 1} {AUDIO_TOKEN} tokens but {len(n_frames)} audios were given")
    expanded = pieces[0] + "".join(AUDIO_TOKEN * audio_tokens_for(n) + rest for n, rest in zip(n_frames, pieces[1:]))
    return np.asarray(tokenizer.encode(expanded, add_special_tokens=False), np.int32)


def end_ids(tokenizer) -> np.ndarray:
    """Ids of the tokens that end an answer (those of :data:`END_TOKENS` the tokenizer has)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in END_TOKENS]
    ids = [i for i in ids if i is not None and i != tokenizer.unk_token_id]
    if not ids:
        raise ValueError(f"the tokenizer has none of the end tokens {END_TOKENS}")
    return np.asarray(ids, np.int32)


def valid_frames(n_samples: int, n_frames_max: int, hop_length: int = 160) -> int:
    """Valid mel frames of ``n_samples`` audio samples, as WhisperFeatureExtractor's
    ``attention_mask[:, ::hop_length].sum()``: ceil(n / hop), at most the window."""
    return int(min(-(-int(n_samples) // hop_length), n_frames_max))


def audio_input(audio, n_mels: int = 128):
    """16 kHz mono audio -> (mel [n_mels, 3000], valid frames) for the real models."""
    from jaxasr_interp.whisper.audio import N_SAMPLES, log_mel
    mel = log_mel(audio, n_mels=n_mels)
    return mel, valid_frames(min(len(audio), N_SAMPLES), mel.shape[-1])
