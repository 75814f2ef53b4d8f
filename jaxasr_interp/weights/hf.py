"""Hugging Face transformers format: ``WhisperForConditionalGeneration`` state dicts and dirs.

A directory holds ``config.json`` plus ``model.safetensors`` (preferred), a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin`` (sharded too), which is read with
``torch.load(weights_only=True)`` so that a checkpoint can never run code.
Torch linear weights are ``[out, in]`` and conv weights ``[out, in, width]``: both are
transposed into the Flax layout of :mod:`.layout`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.layout import CheckpointError, ParamFiller, TensorSource, state_dict_by_table, torch_to_flax

_ATTN = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "out": "out_proj"}
_ENC_BLOCK = {"attn_ln": "self_attn_layer_norm", "mlp_ln": "final_layer_norm", "mlp1": "fc1", "mlp2": "fc2"}
_DEC_BLOCK = {**_ENC_BLOCK, "cross_attn_ln": "encoder_attn_layer_norm"}
_DEC_ATTN = {"attn": "self_attn", "cross_attn": "encoder_attn"}
# WhisperConfig's default FFN widths: what transformers builds from a config.json without them
# (its save_pretrained always writes them; only hand-written configs can lack them).
HF_DEFAULT_FFN = 1536


def dims_from_hf_config(cfg: Mapping) -> Dims:
    try:
        return Dims(
            n_mels=cfg["num_mel_bins"], n_audio_ctx=cfg["max_source_positions"],
            n_audio_state=cfg["d_model"], n_audio_head=cfg["encoder_attention_heads"],
            n_audio_layer=cfg["encoder_layers"], n_vocab=cfg["vocab_size"],
            n_text_ctx=cfg["max_target_positions"], n_text_state=cfg["d_model"],
            n_text_head=cfg["decoder_attention_heads"], n_text_layer=cfg["decoder_layers"],
            n_audio_ffn=cfg.get("encoder_ffn_dim", HF_DEFAULT_FFN),
            n_text_ffn=cfg.get("decoder_ffn_dim", HF_DEFAULT_FFN))
    except KeyError as e:
        raise CheckpointError(f"config.json lacks {e.args[0]!r}: is this a Whisper checkpoint?") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"config.json: invalid Whisper dimensions ({e})") from None


def hf_config_from_dims(dims: Dims) -> dict:
    """A minimal ``WhisperConfig`` dict; transformers fills the rest with its defaults."""
    if dims.n_audio_state != dims.n_text_state:
        raise ValueError("the transformers format needs equal encoder and decoder widths")
    return {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
        "num_mel_bins": dims.n_mels, "max_source_positions": dims.n_audio_ctx,
        "d_model": dims.n_audio_state, "encoder_attention_heads": dims.n_audio_head,
        "encoder_layers": dims.n_audio_layer, "encoder_ffn_dim": dims.n_audio_ffn,
        "vocab_size": dims.n_vocab, "max_target_positions": dims.n_text_ctx,
        "decoder_attention_heads": dims.n_text_head, "decoder_layers": dims.n_text_layer,
        "decoder_ffn_dim": dims.n_text_ffn, "activation_function": "gelu",
        "scale_embedding": False, "tie_word_embeddings": True,
    }


def _name_table(dims: Dims) -> list[tuple[str, int | None, str, str]]:
    """(param path, layer, hf name, kind) for every parameter; kind says how to transpose."""
    rows = [
        ("encoder/conv1/kernel", None, "model.encoder.conv1.weight", "conv"),
        ("encoder/conv1/bias", None, "model.encoder.conv1.bias", "id"),
        ("encoder/conv2/kernel", None, "model.encoder.conv2.weight", "conv"),
        ("encoder/conv2/bias", None, "model.encoder.conv2.bias", "id"),
        ("encoder/positional_embedding/embedding", None, "model.encoder.embed_positions.weight", "id"),
        ("encoder/ln_post/scale", None, "model.encoder.layer_norm.weight", "id"),
        ("encoder/ln_post/bias", None, "model.encoder.layer_norm.bias", "id"),
        ("decoder/token_embedding/embedding", None, "model.decoder.embed_tokens.weight", "id"),
        ("decoder/positional_embedding/embedding", None, "model.decoder.embed_positions.weight", "id"),
        ("decoder/ln/scale", None, "model.decoder.layer_norm.weight", "id"),
        ("decoder/ln/bias", None, "model.decoder.layer_norm.bias", "id"),
    ]
    for stack, n_layers, blocks, attns in (
            ("encoder", dims.n_audio_layer, _ENC_BLOCK, {"attn": "self_attn"}),
            ("decoder", dims.n_text_layer, _DEC_BLOCK, _DEC_ATTN)):
        for i in range(n_layers):
            hf = f"model.{stack}.layers.{i}"
            for ours, theirs in blocks.items():
                is_norm = ours.endswith("_ln")
                rows.append((f"{stack}/blocks/{ours}/{'scale' if is_norm else 'kernel'}", i,
                             f"{hf}.{theirs}.weight", "id" if is_norm else "linear"))
                rows.append((f"{stack}/blocks/{ours}/bias", i, f"{hf}.{theirs}.bias", "id"))
            for ours, theirs in attns.items():
                for proj, hf_proj in _ATTN.items():
                    rows.append((f"{stack}/blocks/{ours}/{proj}/kernel", i, f"{hf}.{theirs}.{hf_proj}.weight", "linear"))
                    if proj != "key":
                        rows.append((f"{stack}/blocks/{ours}/{proj}/bias", i, f"{hf}.{theirs}.{hf_proj}.bias", "id"))
    return rows


def params_from_hf_state_dict(state_dict: Mapping[str, np.ndarray], dims: Dims, source: str = "HF checkpoint") -> dict:
    tensors = TensorSource(state_dict, source)
    if "proj_out.weight" in tensors:
        # The output projection is tied to the token embedding; refuse an untied one.
        emb = state_dict.get("model.decoder.embed_tokens.weight")
        if emb is not None and not np.array_equal(np.asarray(tensors.take("proj_out.weight")), np.asarray(emb)):
            raise CheckpointError(f"{source}: proj_out.weight differs from the token embedding; "
                                  "Whisper ties them and so does this library")
    filler = ParamFiller(dims, source)
    for path, layer, name, kind in _name_table(dims):
        filler.put(path, torch_to_flax(tensors.take(name), kind), layer=layer, origin=name)
    tensors.check_all_taken()
    return filler.finish()


def hf_state_dict_from_params(params: Mapping, dims: Dims) -> dict[str, np.ndarray]:
    return state_dict_by_table(params, _name_table(dims))


def _read_safetensors(files: list[Path]) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file
    out: dict[str, np.ndarray] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def read_torch_bins(files: list[Path]) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise CheckpointError("reading pytorch_model.bin needs PyTorch: pip install torch "
                              "(or convert the checkpoint to safetensors)") from None
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            sd = torch.load(str(f), map_location="cpu", weights_only=True)
        except Exception as e:  # an unpickling error means the file wants to run code, or is corrupt
            raise CheckpointError(f"{f}: refused or unreadable as a weights-only torch checkpoint ({e.__class__.__name__})") from None
        out.update({k: v.detach().float().numpy() for k, v in sd.items()})
    return out


def weight_files(directory: Path) -> tuple[list[Path], str]:
    for single, index, kind in (("model.safetensors", "model.safetensors.index.json", "safetensors"),
                                ("pytorch_model.bin", "pytorch_model.bin.index.json", "torch")):
        if (directory / single).is_file():
            return [directory / single], kind
        if (directory / index).is_file():
            shards = sorted(set(json.loads((directory / index).read_text())["weight_map"].values()))
            return [directory / s for s in shards], kind
    raise CheckpointError(f"{directory}: no model.safetensors, pytorch_model.bin or their sharded index files")


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(
        (path / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json",
                                       "pytorch_model.bin", "pytorch_model.bin.index.json"))


def load_hf_dir(directory: str | Path) -> tuple[dict, Dims]:
    directory = Path(directory)
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{directory}: no config.json, so not a transformers checkpoint directory")
    dims = dims_from_hf_config(json.loads(cfg_file.read_text()))
    files, kind = weight_files(directory)
    state_dict = _read_safetensors(files) if kind == "safetensors" else read_torch_bins(files)
    return params_from_hf_state_dict(state_dict, dims, source=str(directory)), dims


def save_hf_dir(params: Mapping, dims: Dims, directory: str | Path) -> Path:
    """Write ``config.json`` + ``model.safetensors`` that transformers loads as-is."""
    from safetensors.numpy import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(hf_config_from_dims(dims), indent=2))
    save_file(hf_state_dict_from_params(params, dims), str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    return directory


def to_transformers(params: Mapping, dims: Dims):
    """A transformers ``WhisperForConditionalGeneration`` (eager attention, float32, eval mode)
    holding exactly these parameters: the PyTorch reference for parity checks and benchmarks."""
    import torch
    import transformers
    cfg = transformers.WhisperConfig(**hf_config_from_dims(dims), attn_implementation="eager")
    with torch.device("meta"):  # no random initialisation: every tensor is assigned below
        model = transformers.WhisperForConditionalGeneration(cfg).eval()
    sd = {k: torch.from_numpy(np.array(v)) for k, v in hf_state_dict_from_params(params, dims).items()}
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    for name, buffer in model.named_buffers():  # buffers are not in the state dict's tensors
        if buffer.is_meta:
            raise RuntimeError(f"transformers buffer {name} was left uninitialised")
    return model
