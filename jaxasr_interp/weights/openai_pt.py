"""openai/whisper ``.pt`` checkpoints: ``{"dims": {...}, "model_state_dict": {...}}``.

Read with ``torch.load(weights_only=True)``, so a checkpoint can never run code: a file that
pickles anything beyond tensors and plain containers is refused. torch is imported only
inside the functions here. Names are openai's (``encoder.blocks.0.attn.query.weight``,
``mlp.0``/``mlp.2``, ``decoder.token_embedding.weight`` ...); linear weights are
``[out, in]`` and convs ``[out, in, width]``, transposed into the Flax layout of :mod:`.layout`.

openai's ``dims`` has no MLP widths (its model builds ``4 * n_state``): they are read from the
``mlp.0`` weights' shapes, and a model whose widths are not ``4 * n_state`` cannot be written
in this format (openai/whisper could not load it).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.ct2 import sinusoids
from jaxasr_interp.weights.layout import CheckpointError, ParamFiller, TensorSource, state_dict_by_table, torch_to_flax

_BLOCK = {"attn_ln": "attn_ln", "mlp_ln": "mlp_ln", "mlp1": "mlp.0", "mlp2": "mlp.2"}
_ATTN = ("query", "key", "value", "out")
# Buffers that openai's model registers as non-persistent and recomputes; should a
# checkpoint carry them anyway they are derived data, skipped by name.
_DERIVED_BUFFERS = ("decoder.mask", "alignment_heads")


def _name_table(dims: Dims) -> list[tuple[str, int | None, str, str]]:
    """(param path, layer, openai name, kind) for every parameter."""
    rows = [
        ("encoder/conv1/kernel", None, "encoder.conv1.weight", "conv"),
        ("encoder/conv1/bias", None, "encoder.conv1.bias", "id"),
        ("encoder/conv2/kernel", None, "encoder.conv2.weight", "conv"),
        ("encoder/conv2/bias", None, "encoder.conv2.bias", "id"),
        ("encoder/positional_embedding/embedding", None, "encoder.positional_embedding", "id"),
        ("encoder/ln_post/scale", None, "encoder.ln_post.weight", "id"),
        ("encoder/ln_post/bias", None, "encoder.ln_post.bias", "id"),
        ("decoder/token_embedding/embedding", None, "decoder.token_embedding.weight", "id"),
        ("decoder/positional_embedding/embedding", None, "decoder.positional_embedding", "id"),
        ("decoder/ln/scale", None, "decoder.ln.weight", "id"),
        ("decoder/ln/bias", None, "decoder.ln.bias", "id"),
    ]
    for stack, n_layers, attns in (("encoder", dims.n_audio_layer, ("attn",)),
                                   ("decoder", dims.n_text_layer, ("attn", "cross_attn"))):
        block = dict(_BLOCK, **({"cross_attn_ln": "cross_attn_ln"} if stack == "decoder" else {}))
        for i in range(n_layers):
            pre = f"{stack}.blocks.{i}"
            for ours, theirs in block.items():
                is_norm = ours.endswith("_ln")
                rows.append((f"{stack}/blocks/{ours}/{'scale' if is_norm else 'kernel'}", i,
                             f"{pre}.{theirs}.weight", "id" if is_norm else "linear"))
                rows.append((f"{stack}/blocks/{ours}/bias", i, f"{pre}.{theirs}.bias", "id"))
            for attn in attns:
                for proj in _ATTN:
                    rows.append((f"{stack}/blocks/{attn}/{proj}/kernel", i, f"{pre}.{attn}.{proj}.weight", "linear"))
                    if proj != "key":
                        rows.append((f"{stack}/blocks/{attn}/{proj}/bias", i, f"{pre}.{attn}.{proj}.bias", "id"))
    return rows


def params_from_openai_state_dict(state_dict: Mapping[str, np.ndarray], dims: Dims,
                                  source: str = "openai checkpoint") -> dict:
    tensors = TensorSource(state_dict, source)
    for name in _DERIVED_BUFFERS:
        tensors.skip(name)
    filler = ParamFiller(dims, source)
    for path, layer, name, kind in _name_table(dims):
        if name == "encoder.positional_embedding" and name not in tensors:
            # A persistent buffer in openai's model, so normally saved; if absent it is the
            # fixed sinusoidal function, recomputed exactly as openai/whisper does.
            filler.put(path, sinusoids(dims.n_audio_ctx, dims.n_audio_state), origin="sinusoids()")
            continue
        filler.put(path, torch_to_flax(tensors.take(name), kind), layer=layer, origin=name)
    tensors.check_all_taken()
    return filler.finish()


def openai_state_dict_from_params(params: Mapping, dims: Dims) -> dict[str, np.ndarray]:
    return state_dict_by_table(params, _name_table(dims))


# openai's ModelDimensions: Dims' fields without a default (not the FFN widths)
OPENAI_FIELDS = tuple(f.name for f in dataclasses.fields(Dims) if f.default is dataclasses.MISSING)


def _ffn_width(state: Mapping, stack: str) -> int:
    """The MLP width from the first block's ``mlp.0`` weight [ffn, state] (0, Whisper's default,
    when absent: the filler then reports the missing tensor)."""
    weight = state.get(f"{stack}.blocks.0.mlp.0.weight")
    return int(np.shape(weight)[0]) if weight is not None and np.ndim(weight) == 2 else 0


def _dims_from_dict(d, source: str, state: Mapping) -> Dims:
    if not isinstance(d, Mapping):
        raise CheckpointError(f"{source}: 'dims' is a {type(d).__name__}, expected a dict of model dimensions")
    missing = [f for f in OPENAI_FIELDS if f not in d]
    if missing:
        raise CheckpointError(f"{source}: 'dims' lacks {', '.join(missing)}")
    try:
        return Dims(**{f: int(d[f]) for f in OPENAI_FIELDS}, n_audio_ffn=_ffn_width(state, "encoder"),
                    n_text_ffn=_ffn_width(state, "decoder"))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: invalid dims: {e}") from None


def _why(e: Exception) -> str:
    """The one informative line of torch's weights-only refusal, e.g. 'Unsupported global: ...'."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for line in text.splitlines():
        if "WeightsUnpickler error:" in line:
            return ": " + line.split("WeightsUnpickler error:", 1)[1].strip().split(". ")[0]
    return ""


def load_openai_pt(path: str | os.PathLike) -> tuple[dict, Dims]:
    """Read an openai/whisper ``.pt`` checkpoint into ``(params, dims)``."""
    path = Path(path)
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{path}: reading openai .pt checkpoints needs PyTorch: pip install torch") from None
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused: not a weights-only checkpoint (it pickles Python objects "
                              f"that could run code when loaded{_why(e)})") from None
    except Exception as e:  # a truncated zip, not a torch file at all ...
        raise CheckpointError(f"{path}: unreadable as a torch checkpoint ({e.__class__.__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from None
    if not isinstance(ckpt, Mapping) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = list(ckpt)[:6] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an openai/whisper checkpoint (expected a dict with 'dims' and "
                              f"'model_state_dict', got {keys})")
    extra = sorted(set(ckpt) - {"dims", "model_state_dict"})
    if extra:
        raise CheckpointError(f"{path}: unexpected top-level entries {extra} beside 'dims' and 'model_state_dict'")
    state = {}
    for name, value in ckpt["model_state_dict"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: model_state_dict entry {name!r} is a {type(value).__name__}, not a tensor")
        if name in _DERIVED_BUFFERS:
            state[name] = np.zeros(())  # skipped by name; sparse/bool buffers need no conversion
            continue
        state[name] = value.detach().to(torch.float32).numpy()
    dims = _dims_from_dict(ckpt["dims"], str(path), state)
    return params_from_openai_state_dict(state, dims, source=str(path)), dims


def save_openai_pt(params: Mapping, dims: Dims, path: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write an openai/whisper-style ``.pt`` (``dtype`` "float16" as openai ships them); its
    ``dims`` holds openai's fields only, so that ``whisper.load_model`` reads it."""
    import torch
    if (dims.n_audio_ffn, dims.n_text_ffn) != (4 * dims.n_audio_state, 4 * dims.n_text_state):
        raise ValueError(f"openai/whisper's format assumes MLP widths of 4 * state; these dims have "
                         f"{dims.n_audio_ffn} and {dims.n_text_ffn} (use the transformers or flax format)")
    path = Path(path)
    tdtype = {"float32": torch.float32, "float16": torch.float16}[dtype]
    sd = {k: torch.from_numpy(v).to(tdtype) for k, v in openai_state_dict_from_params(params, dims).items()}
    openai_dims = {f: getattr(dims, f) for f in OPENAI_FIELDS}
    torch.save({"dims": openai_dims, "model_state_dict": sd}, str(path))
    return path
