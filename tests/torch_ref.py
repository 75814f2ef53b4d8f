"""The PyTorch reference for parity tests: transformers' eager Whisper, float32, on CPU.

``reference_run`` returns the model's logits together with the values our site vocabulary
names, read with forward hooks at the same points of the computation.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.hf import hf_config_from_dims, params_from_hf_state_dict
from jaxasr_interp.weights.hf import to_transformers as torch_model_from_params  # noqa: F401


_SMALL_VOCAB_IDS = dict(pad_token_id=0, bos_token_id=0, eos_token_id=1, decoder_start_token_id=2)


def random_torch_model(dims: Dims, seed: int = 0):
    torch.manual_seed(seed)
    # special-token ids must lie inside a small random vocabulary
    cfg = transformers.WhisperConfig(**{**hf_config_from_dims(dims), **_SMALL_VOCAB_IDS},
                                     attn_implementation="eager")
    model = transformers.WhisperForConditionalGeneration(cfg).eval()
    with torch.no_grad():  # random LayerNorm affine and biases so that they are tested too
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(p + 0.1 * torch.randn_like(p))
            elif "q_proj.weight" in name or "k_proj.weight" in name:
                p.mul_(8.0)  # peaked attention patterns, not near-uniform ones
            elif "out_proj.weight" in name or "fc2.weight" in name:
                p.mul_(4.0)  # blocks that move the residual stream, so that edits show in logits
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
    return model


def params_of(model, dims: Dims) -> dict:
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return params_from_hf_state_dict(sd, dims)


def _heads(t, n_head):  # [1, T, D] -> [T, H, dh]
    return t[0].reshape(t.shape[1], n_head, -1).numpy()


def reference_run(model, mel: np.ndarray, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """Run the torch model once; return {site name: value stacked over layers, 'logits': ...}."""
    cfg = model.config
    grabbed: dict[str, list] = {}
    hooks = []

    def keep(*pairs):  # returns None: a forward hook that returns a value replaces the output
        for name, value in zip(pairs[::2], pairs[1::2]):
            grabbed.setdefault(name, []).append(value.detach().clone())

    def first(o):
        return (o[0] if isinstance(o, tuple) else o)[0]

    def hook(module, fn):
        hooks.append(module.register_forward_hook(fn))

    enc, dec = model.model.encoder, model.model.decoder
    for stack, layers, n_head, attn_names in (
            ("encoder", enc.layers, cfg.encoder_attention_heads, {"self_attn": "attn"}),
            ("decoder", dec.layers, cfg.decoder_attention_heads,
             {"self_attn": "self_attn", "encoder_attn": "cross_attn"})):
        for layer in layers:
            hook(layer, lambda m, i, o, s=stack: keep(f"{s}.resid_pre", i[0][0], f"{s}.resid_post", first(o)))
            hook(layer.final_layer_norm, lambda m, i, o, s=stack: keep(
                f"{s}.resid_mid" if s == "encoder" else f"{s}.resid_mid_cross", i[0][0]))
            if stack == "decoder":
                hook(layer.encoder_attn_layer_norm, lambda m, i, o: keep("decoder.resid_mid", i[0][0]))
            hook(layer.fc2, lambda m, i, o, s=stack: keep(f"{s}.mlp_out", o[0], f"{s}.mlp.hidden", i[0][0]))
            for attr, ours in attn_names.items():
                attn = getattr(layer, attr)
                for proj, site in (("q_proj", "q"), ("k_proj", "k"), ("v_proj", "v")):
                    hook(getattr(attn, proj), lambda m, i, o, s=stack, a=ours, x=site, h=n_head:
                         keep(f"{s}.{a}.{x}", torch.from_numpy(_heads(o, h))))
                hook(attn.out_proj, lambda m, i, o, s=stack, a=ours, h=n_head: keep(
                    f"{s}.{a}_out", o[0], f"{s}.{a}.z", torch.from_numpy(_heads(i[0], h))))
    hook(dec.layer_norm, lambda m, i, o: keep("decoder.ln_final", o[0]))
    with torch.no_grad():
        out = model(input_features=torch.from_numpy(np.asarray(mel))[None],
                    decoder_input_ids=torch.from_numpy(np.asarray(tokens)).long()[None],
                    output_attentions=True, output_hidden_states=True)
    for h in hooks:
        h.remove()
    ref = {k: torch.stack(v).numpy() for k, v in grabbed.items()}
    ref["encoder.attn.pattern"] = torch.stack([a[0] for a in out.encoder_attentions]).numpy()
    ref["decoder.self_attn.pattern"] = torch.stack([a[0] for a in out.decoder_attentions]).numpy()
    ref["decoder.cross_attn.pattern"] = torch.stack([a[0] for a in out.cross_attentions]).numpy()
    ref["encoder.ln_post"] = out.encoder_last_hidden_state[0].numpy()
    ref["encoder.embed"] = out.encoder_hidden_states[0][0].numpy()
    ref["decoder.embed"] = out.decoder_hidden_states[0][0].numpy()
    ref["decoder.ln_final"] = ref["decoder.ln_final"][0]  # not a block site: no layer axis
    ref["logits"] = out.logits[0].numpy()
    return ref
