"""Qwen2-Audio checkpoints -> the parameter tree, checked name by name and shape by shape.

Sources (:func:`load_weights`): a transformers directory (``config.json`` + ``model.safetensors``
or a sharded ``model.safetensors.index.json``; ``pytorch_model*.bin`` only through
``torch.load(weights_only=True)``), a hub id resolved through huggingface_hub's cache, or a
directory written by :func:`save_params` (orbax). Both transformers naming schemes are read:
the hub checkpoints' (``audio_tower.*``, ``language_model.model.*``, ``language_model.lm_head``)
and the one transformers 5 writes (``model.audio_tower.*``, ``model.language_model.*``,
``lm_head``).

The tree (Flax leaves, kernels ``[in, out]``, blocks stacked ``[L, ...]``)::

    encoder    Whisper's encoder tree (weights/layout.py), ln_post applied after pooling
    projector  {kernel [Da, Dt], bias}
    decoder    token_embedding.embedding [V, Dt]; blocks: attn_norm.scale, attn.{query,key,value}
               (kernel, bias), attn.out.kernel, mlp_norm.scale, mlp.{gate,up,down}.kernel;
               norm.scale; lm_head.kernel [Dt, V] (a copy of the embedding when tied)

As for Whisper (:class:`~jaxasr_interp.weights.layout.ParamFiller`), every slot is filled once
with the right shape and every checkpoint tensor is consumed; anything else is a one-line error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxasr_interp.weights.hf import read_torch_bins, weight_files
from jaxasr_interp.weights.layout import CheckpointError, ParamFiller, TensorSource, linear_shapes, encoder_shapes, iter_paths, torch_to_flax
from jaxasr_interp.qwen2_audio.config import QwenAudioDims, dims_from_hf_config

DIMS_FILE = "qwen2_audio_dims.json"
PARAMS_DIR = "params"
_LEGACY = (("audio_tower.", "model.audio_tower."), ("multi_modal_projector.", "model.multi_modal_projector."),
           ("language_model.model.", "model.language_model."), ("language_model.lm_head.", "lm_head."))


def param_shapes(dims: QwenAudioDims) -> dict:
    da, dt, la, lt = dims.n_audio_state, dims.n_text_state, dims.n_audio_layer, dims.n_text_layer
    dq, dkv, f = dims.n_text_head * dims.d_head, dims.n_kv_head * dims.d_head, dims.n_text_ffn
    return {
        "encoder": encoder_shapes(dims.n_mels, dims.n_audio_ctx, da, la, dims.n_audio_ffn),
        "projector": linear_shapes(da, dt),
        "decoder": {
            "token_embedding": {"embedding": (dims.n_vocab, dt)},
            "blocks": {
                "attn_norm": {"scale": (lt, dt)},
                "attn": {"query": linear_shapes(dt, dq, layers=lt), "key": linear_shapes(dt, dkv, layers=lt),
                         "value": linear_shapes(dt, dkv, layers=lt), "out": linear_shapes(dq, dt, bias=False, layers=lt)},
                "mlp_norm": {"scale": (lt, dt)},
                "mlp": {"gate": linear_shapes(dt, f, bias=False, layers=lt), "up": linear_shapes(dt, f, bias=False, layers=lt),
                        "down": linear_shapes(f, dt, bias=False, layers=lt)},
            },
            "norm": {"scale": (dt,)},
            "lm_head": {"kernel": (dt, dims.n_vocab)},
        },
    }


class QwenParamFiller(ParamFiller):
    """:class:`ParamFiller` over the Qwen2-Audio skeleton."""

    def __init__(self, dims: QwenAudioDims, source: str = "checkpoint"):
        # not super().__init__: that would build Whisper's skeleton; the rest is inherited as is
        self.dims, self.source = dims, source
        self.shapes = dict(iter_paths(param_shapes(dims)))
        self.values, self.filled = {}, {}


class _Tensors(TensorSource):
    def check_all_taken(self) -> None:
        extra = sorted(set(self.tensors) - self.taken)
        if extra:
            shown = ", ".join(extra[:8]) + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
            raise CheckpointError(f"{self.source}: unexpected tensors not part of a Qwen2-Audio model: {shown}")


def _name_table(dims: QwenAudioDims) -> list[tuple[str, int | None, str, str]]:
    """(param path, layer, transformers-5 name, kind) for every parameter but ``lm_head``."""
    enc, lm = "model.audio_tower", "model.language_model"
    rows = [("encoder/conv1/kernel", None, f"{enc}.conv1.weight", "conv"),
            ("encoder/conv1/bias", None, f"{enc}.conv1.bias", "id"),
            ("encoder/conv2/kernel", None, f"{enc}.conv2.weight", "conv"),
            ("encoder/conv2/bias", None, f"{enc}.conv2.bias", "id"),
            ("encoder/positional_embedding/embedding", None, f"{enc}.embed_positions.weight", "id"),
            ("encoder/ln_post/scale", None, f"{enc}.layer_norm.weight", "id"),
            ("encoder/ln_post/bias", None, f"{enc}.layer_norm.bias", "id"),
            ("projector/kernel", None, "model.multi_modal_projector.linear.weight", "linear"),
            ("projector/bias", None, "model.multi_modal_projector.linear.bias", "id"),
            ("decoder/token_embedding/embedding", None, f"{lm}.embed_tokens.weight", "id"),
            ("decoder/norm/scale", None, f"{lm}.norm.weight", "id")]
    for i in range(dims.n_audio_layer):
        hf = f"{enc}.layers.{i}"
        for ours, theirs in (("attn_ln", "self_attn_layer_norm"), ("mlp_ln", "final_layer_norm"),
                             ("mlp1", "fc1"), ("mlp2", "fc2")):
            norm = ours.endswith("_ln")
            rows += [(f"encoder/blocks/{ours}/{'scale' if norm else 'kernel'}", i, f"{hf}.{theirs}.weight",
                      "id" if norm else "linear"), (f"encoder/blocks/{ours}/bias", i, f"{hf}.{theirs}.bias", "id")]
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"), ("out", "out_proj")):
            rows.append((f"encoder/blocks/attn/{ours}/kernel", i, f"{hf}.self_attn.{theirs}.weight", "linear"))
            if ours != "key":  # Whisper's key projection has no bias
                rows.append((f"encoder/blocks/attn/{ours}/bias", i, f"{hf}.self_attn.{theirs}.bias", "id"))
    for i in range(dims.n_text_layer):
        hf = f"{lm}.layers.{i}"
        rows += [("decoder/blocks/attn_norm/scale", i, f"{hf}.input_layernorm.weight", "id"),
                 ("decoder/blocks/mlp_norm/scale", i, f"{hf}.post_attention_layernorm.weight", "id"),
                 ("decoder/blocks/attn/out/kernel", i, f"{hf}.self_attn.o_proj.weight", "linear")]
        for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            rows += [(f"decoder/blocks/attn/{ours}/kernel", i, f"{hf}.self_attn.{theirs}.weight", "linear"),
                     (f"decoder/blocks/attn/{ours}/bias", i, f"{hf}.self_attn.{theirs}.bias", "id")]
        for ours in ("gate", "up", "down"):
            rows.append((f"decoder/blocks/mlp/{ours}/kernel", i, f"{hf}.mlp.{ours}_proj.weight", "linear"))
    return rows


def canonical_names(state_dict, source: str) -> dict:
    """Rename the hub checkpoints' legacy prefixes to transformers 5's; refuse collisions."""
    out = {}
    for name, value in state_dict.items():
        new = next((n + name[len(o):] for o, n in _LEGACY if name.startswith(o)), name)
        if new in out:
            raise CheckpointError(f"{source}: tensor {name!r} and another both name {new!r}")
        out[new] = value
    return out


def params_from_state_dict(state_dict, dims: QwenAudioDims, *, tied: bool = False,
                           source: str = "Qwen2-Audio checkpoint") -> dict:
    tensors = _Tensors(canonical_names(state_dict, source), source)
    filler = QwenParamFiller(dims, source)
    for path, layer, name, kind in _name_table(dims):
        filler.put(path, torch_to_flax(tensors.take(name), kind), layer=layer, origin=name)
    if "lm_head.weight" in tensors or not tied:
        filler.put("decoder/lm_head/kernel", tensors.take("lm_head.weight").T, origin="lm_head.weight")
    else:  # tied: the embedding read twice (it was consumed above)
        emb = tensors.tensors["model.language_model.embed_tokens.weight"]
        filler.put("decoder/lm_head/kernel", np.asarray(emb).T, origin="embed_tokens (tied)")
    tensors.check_all_taken()
    return filler.finish()


def state_dict_from_params(params, dims: QwenAudioDims) -> dict[str, np.ndarray]:
    """Transformers-5 names and torch layouts (``lm_head.weight`` included)."""
    flat = dict(iter_paths(params))
    out = {}
    for path, layer, name, kind in _name_table(dims):
        value = np.asarray(flat[path], np.float32)
        out[name] = np.ascontiguousarray(torch_to_flax(value if layer is None else value[layer], kind))
    out["lm_head.weight"] = np.ascontiguousarray(np.asarray(flat["decoder/lm_head/kernel"], np.float32).T)
    return out


def read_safetensors(path) -> dict[str, np.ndarray]:
    """The tensors of one ``.safetensors`` file as read-only memory maps, bfloat16 included
    (the real checkpoints are bfloat16, which ``safetensors.numpy`` cannot represent; ml_dtypes,
    a JAX dependency, can). Each tensor is converted to float32 only when the filler takes it,
    so the raw checkpoint is never held in memory as a whole."""
    import ml_dtypes
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16, "F64": np.float64}
    try:
        with open(path, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        raw = np.memmap(path, np.uint8, mode="r", offset=8 + n)
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            if info["dtype"] not in dtypes:
                raise CheckpointError(f"{path}: tensor {name!r} has dtype {info['dtype']}, expected a float type")
            begin, end = info["data_offsets"]
            out[name] = raw[begin:end].view(dtypes[info["dtype"]]).reshape(info["shape"])
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e.__class__.__name__})") from None


def load_hf_dir(directory) -> tuple[dict, QwenAudioDims]:
    directory = Path(directory)
    cfg_file = directory / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{directory}: no config.json, so not a transformers checkpoint directory")
    cfg = json.loads(cfg_file.read_text())
    try:
        dims = dims_from_hf_config(cfg)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{cfg_file}: {e}") from None
    tied = bool(cfg.get("tie_word_embeddings") or cfg.get("text_config", {}).get("tie_word_embeddings"))
    files, kind = weight_files(directory)
    sd = {k: v for f in files for k, v in read_safetensors(f).items()} if kind == "safetensors" \
        else read_torch_bins(files)
    return params_from_state_dict(sd, dims, tied=tied, source=str(directory)), dims


def save_params(params, dims: QwenAudioDims, directory, overwrite: bool = False) -> Path:
    """Write params (checked against dims) with orbax, and the dims as JSON."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    checked = _refill(dict(iter_paths(params)), dims, "params to save")
    if (directory / PARAMS_DIR).exists() and not overwrite:
        raise CheckpointError(f"{directory / PARAMS_DIR} exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, checked, force=overwrite)
        ckptr.wait_until_finished()
    (directory / DIMS_FILE).write_text(json.dumps(dataclasses.asdict(dims), indent=2) + "\n")
    return directory


def _refill(flat: dict, dims: QwenAudioDims, source: str) -> dict:
    tensors, filler = _Tensors(flat, source), QwenParamFiller(dims, source)
    for path, shape in filler.shapes.items():
        value = np.asarray(tensors.take(path), np.float32)
        if "/blocks/" in path and value.ndim and value.shape[0] == shape[0]:
            for layer in range(shape[0]):
                filler.put(path, value[layer], layer=layer, origin=path)
        elif "/blocks/" in path:
            raise CheckpointError(f"{source}: {path!r} has shape {value.shape}, expected {shape}")
        else:
            filler.put(path, value, origin=path)
    tensors.check_all_taken()
    return filler.finish()


def load_params(directory) -> tuple[dict, QwenAudioDims]:
    """``(params, dims)`` from a directory written by :func:`save_params`."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    try:
        raw = json.loads((directory / DIMS_FILE).read_text())
        # fields with a default (n_audio_ffn ...) may be absent from files written before them
        dims = QwenAudioDims(**{f.name: raw[f.name] for f in dataclasses.fields(QwenAudioDims)
                                if f.name in raw or f.default is dataclasses.MISSING})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{directory / DIMS_FILE}: missing or invalid ({e.__class__.__name__})") from None
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(directory / PARAMS_DIR)
    except Exception as e:  # orbax raises many kinds of errors for damaged checkpoints
        raise CheckpointError(f"{directory / PARAMS_DIR}: cannot restore ({e.__class__.__name__})") from None
    return _refill(dict(iter_paths(restored)), dims, str(directory)), dims


def load_weights(source) -> tuple[dict, QwenAudioDims]:
    """``(params, dims)`` from an orbax directory, a transformers directory or a hub id."""
    from jaxasr_interp.weights import hub
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_params(path) if (path / DIMS_FILE).is_file() else load_hf_dir(path)
    if hub.looks_like_hub_id(text):
        return load_hf_dir(hub.hub_snapshot(text))
    raise CheckpointError(f"{text}: no such directory and not a Hugging Face hub id like Qwen/Qwen2-Audio-7B-Instruct")
