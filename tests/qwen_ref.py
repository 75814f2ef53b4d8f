"""The PyTorch reference for Qwen2-Audio parity: transformers' eager
``Qwen2AudioForConditionalGeneration`` (float32, CPU), a tiny random model, and a tiny local
tokenizer + ``Qwen2AudioProcessor`` (no network).

``reference_run`` returns the logits and the values our site vocabulary names, read with
forward hooks and, for the attention internals (rotated queries/keys, patterns), by wrapping
each model file's ``eager_attention_forward`` for the duration of the call.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers.models.qwen2 import modeling_qwen2
from transformers.models.qwen2_audio import modeling_qwen2_audio

from jaxasr_interp.qwen2_audio.config import QwenAudioDims, hf_config_dict
from jaxasr_interp.qwen2_audio.weights import params_from_state_dict

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
AUDIO_TOKEN_ID = SPECIALS.index("<|AUDIO|>")
WORDS = sorted(set("system You are a helpful assistant . user Audio 1 2 : What does the speaker say ? "
                   "Transcribe this please".split()))
SAMPLE_RATE = 16000


def tiny_tokenizer():
    """A word-level tokenizer with Qwen2-Audio's special tokens at ids 0..5."""
    vocab = {t: i for i, t in enumerate(SPECIALS + ["[UNK]"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(SPECIALS)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                                eos_token="<|im_end|>", pad_token="<|endoftext|>")


def tiny_processor(dims: QwenAudioDims):
    """Whisper features for a one-second window of ``2 * n_audio_ctx`` frames at 16 kHz."""
    hop = SAMPLE_RATE // dims.n_samples_frames
    assert hop * dims.n_samples_frames == SAMPLE_RATE
    fe = transformers.WhisperFeatureExtractor(feature_size=dims.n_mels, sampling_rate=SAMPLE_RATE,
                                              hop_length=hop, chunk_length=1, n_fft=400)
    return transformers.Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tiny_tokenizer())


def random_model(dims: QwenAudioDims, seed: int = 0):
    """Eager float32 model with well-scaled random weights (unit-variance activations, random
    norm scales and biases, peaked attention) so that every site carries signal."""
    torch.manual_seed(seed)
    cfg = transformers.Qwen2AudioConfig(**hf_config_dict(dims))
    model = transformers.Qwen2AudioForConditionalGeneration._from_config(cfg, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif p.ndim == 1:  # LayerNorm / RMSNorm scales
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif "embed" in name:
                p.copy_(torch.randn_like(p))
            else:
                fan_in = p.shape[1] * (p.shape[2] if p.ndim == 3 else 1)
                gain = 2.0 if ("q_proj" in name or "k_proj" in name) else 1.0
                p.copy_(gain * torch.randn_like(p) / fan_in ** 0.5)
    return model


def params_of(model, dims: QwenAudioDims) -> dict:
    return params_from_state_dict({k: v.detach().numpy() for k, v in model.state_dict().items()}, dims)


@contextlib.contextmanager
def _recording(module, store: list):
    original = module.eager_attention_forward

    def wrapped(mod, query, key, value, attention_mask, *args, **kwargs):
        out, weights = original(mod, query, key, value, attention_mask, *args, **kwargs)
        store.append((query[0], key[0], value[0], weights[0]))
        return out, weights

    with mock.patch.object(module, "eager_attention_forward", wrapped):
        yield


def _heads(t, n_head):  # [1, T, D] -> [T, H, dh]
    return t[0].reshape(t.shape[1], n_head, -1)


def _site_hooks(model, keep, hook) -> None:
    """Hooks that ``keep`` each site the hooks can see (the attention internals are recorded
    by :func:`_recording`)."""
    enc, lm = model.model.audio_tower, model.model.language_model
    ha, ht = enc.config.encoder_attention_heads, lm.config.num_attention_heads
    for layer in enc.layers:
        hook(layer, lambda m, i, o: keep("encoder.resid_pre", i[0][0], "encoder.resid_post", o[0]))
        hook(layer.final_layer_norm, lambda m, i, o: keep("encoder.resid_mid", i[0][0]))
        hook(layer.fc2, lambda m, i, o: keep("encoder.mlp.hidden", i[0][0], "encoder.mlp_out", o[0]))
        attn = layer.self_attn
        for proj, site in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v")):
            hook(getattr(attn, proj), lambda m, i, o, s=site: keep(f"encoder.attn.{s}", _heads(o, ha)))
        hook(attn.out_proj, lambda m, i, o: keep("encoder.attn.z", _heads(i[0], ha), "encoder.attn_out", o[0]))
    hook(enc.layer_norm, lambda m, i, o: keep("encoder.pooled", i[0][0], "encoder.ln_post", o[0]))
    hook(model.model.multi_modal_projector, lambda m, i, o: keep("encoder.proj", o[0]))
    for layer in lm.layers:
        hook(layer, lambda m, a, k, o: keep("decoder.resid_pre", (a[0] if a else k["hidden_states"])[0],
                                            "decoder.resid_post", (o[0] if isinstance(o, tuple) else o)[0]),
             kwargs=True)
        hook(layer.post_attention_layernorm, lambda m, i, o: keep("decoder.resid_mid", i[0][0]))
        hook(layer.mlp.down_proj, lambda m, i, o: keep("decoder.mlp.hidden", i[0][0], "decoder.mlp_out", o[0]))
        hook(layer.self_attn.o_proj, lambda m, i, o: keep("decoder.attn.z", _heads(i[0], ht), "decoder.attn_out", o[0]))
    hook(lm.norm, lambda m, i, o: keep("decoder.ln_final", o[0]))


def reference_run(model, ids, features, feature_mask, extra_hooks=()) -> dict[str, np.ndarray]:
    """One forward pass; {site: value stacked over layers, "logits": [T, V]}. ``extra_hooks``:
    (module, forward hook) pairs active during the pass (interventions)."""
    grabbed: dict[str, list] = {}
    handles = []

    def keep(*pairs):  # returns None: a hook that returns a value would replace the output
        for name, value in zip(pairs[::2], pairs[1::2]):
            grabbed.setdefault(name, []).append(value.detach().clone())

    def hook(module, fn, pre=False, kwargs=False):
        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        handles.append(register(fn, with_kwargs=kwargs) if kwargs else register(fn))

    _site_hooks(model, keep, hook)
    for module, fn in extra_hooks:
        hook(module, fn)
    enc_attn, dec_attn = [], []
    try:
        with torch.no_grad(), _recording(modeling_qwen2_audio, enc_attn), _recording(modeling_qwen2, dec_attn):
            out = model(input_ids=torch.as_tensor(np.asarray(ids)).long()[None],
                        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        input_features=torch.as_tensor(np.asarray(features))[None],
                        feature_attention_mask=torch.as_tensor(np.asarray(feature_mask)).long()[None])
    finally:
        for h in handles:
            h.remove()
    ref = {k: torch.stack(v).numpy() for k, v in grabbed.items()}
    for key in ("encoder.pooled", "encoder.ln_post", "encoder.proj", "decoder.ln_final"):
        ref[key] = ref[key][0]  # whole-stack sites: no layer axis
    ref["encoder.embed"] = ref["encoder.resid_pre"][0]
    ref["decoder.embed"] = ref["decoder.resid_pre"][0]
    ref["encoder.attn.pattern"] = torch.stack([w for *_, w in enc_attn]).numpy()
    for i, site in enumerate(("decoder.attn.q", "decoder.attn.k", "decoder.attn.v", "decoder.attn.pattern")):
        values = [rec[i] for rec in dec_attn]
        ref[site] = torch.stack(values if site.endswith("pattern") else [v.transpose(0, 1) for v in values]).numpy()
    ref["logits"] = out.logits[0].numpy()
    return ref
