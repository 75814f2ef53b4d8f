"""Qwen2-Audio (the paper's second model) as pure JAX functions, with the same sites and edits.

::

    from jaxasr_interp import qwen2_audio as qa
    params, dims = qa.load_weights("Qwen/Qwen2-Audio-7B-Instruct")   # or a local directory
    mel, n_frames = qa.audio_input(audio)                            # 16 kHz -> 128 mels, valid frames
    text = qa.chat_text([{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "..."}]}], tok)
    tokens = qa.prompt_ids(tok, text, [n_frames])
    logits, acts = qa.forward(params, mel, tokens, dims=dims, n_frames=n_frames, capture=["decoder.resid_post"])
    ids = qa.generate(params, mel, tokens, qa.end_ids(tok), dims=dims, n_frames=n_frames)

Modules: config (dims), sites (vocabulary), model (encode/decode/forward), decoding (greedy with
a KV cache), weights (safetensors/hub/orbax), prompt (chat template), lens (logit lens),
sharding (mesh placement and memory estimate for the 7B model).
"""

from jaxasr_interp.qwen2_audio.config import QWEN2_AUDIO_7B, QwenAudioDims, audio_tokens_for, dims_from_hf_config, hf_config_dict
from jaxasr_interp.qwen2_audio.decoding import generate, greedy_decode, init_cache
from jaxasr_interp.qwen2_audio.lens import logit_lens
from jaxasr_interp.qwen2_audio.model import decode, encode, forward
from jaxasr_interp.qwen2_audio.prompt import audio_input, chat_text, end_ids, prompt_ids, render_chat
from jaxasr_interp.qwen2_audio.sharding import memory_estimate, shard_params
from jaxasr_interp.qwen2_audio.sites import ALL_SITES
from jaxasr_interp.qwen2_audio.weights import load_params, load_weights, params_from_state_dict, save_params, state_dict_from_params

__all__ = [
    "ALL_SITES", "QWEN2_AUDIO_7B", "QwenAudioDims", "audio_input", "audio_tokens_for", "chat_text",
    "decode", "dims_from_hf_config", "encode", "end_ids", "forward", "generate", "greedy_decode",
    "hf_config_dict", "init_cache", "load_params", "load_weights", "logit_lens", "memory_estimate",
    "params_from_state_dict", "prompt_ids", "render_chat", "save_params", "shard_params",
    "state_dict_from_params",
]
