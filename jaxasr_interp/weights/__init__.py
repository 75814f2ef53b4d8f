"""Checkpoint readers and converters into the parameter tree of :mod:`.layout`.

:func:`load_weights` takes any supported source and returns :class:`LoadedWeights`:

* a bundled name: ``"tiny.en"`` or ``"base"`` (pip-installed CTranslate2 files, offline);
* a CTranslate2 ``model.bin`` file, or a directory holding one (``config.json`` and
  ``tokenizer.json`` beside it are used);
* an openai/whisper ``.pt`` file;
* a transformers directory (``config.json`` + safetensors or ``pytorch_model.bin``);
* a transformers Flax directory (``config.json`` + ``flax_model.msgpack``, as on the hub and in
  whisper-jax), or its ``flax_model.msgpack`` file;
* a directory written by :func:`.orbax_io.save_params`;
* a Hugging Face hub id such as ``openai/whisper-tiny`` (cached, or downloaded when online).

Formats that carry no tokenizer (``.pt``) give ``tokenizer_file=None``: the caller picks the
bundled English or multilingual tokenizer from ``dims.is_multilingual``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.layout import CheckpointError

__all__ = ["CheckpointError", "LoadedWeights", "known_names", "load_weights"]


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedWeights:
    params: dict
    dims: Dims
    tokenizer_file: Path | None
    source: str


def known_names() -> list[str]:
    """The model names :func:`load_weights` accepts without a path or a hub id."""
    from jaxasr_interp.weights.bundled import BUNDLED_NAMES
    return list(BUNDLED_NAMES)


def _unknown(source) -> CheckpointError:
    return CheckpointError(
        f"unknown model {str(source)!r}: expected one of {', '.join(known_names())}, a local directory, "
        "a .pt file, a model.bin or a Hugging Face hub id like openai/whisper-tiny")


def _tokenizer_in(directory: Path) -> Path | None:
    tok = directory / "tokenizer.json"
    return tok if tok.is_file() else None


def _is_torch_file(path: Path) -> bool:
    """torch.save files are zip archives (or, in the legacy format, start with a pickle)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _load_ct2_file(path: Path, source: str) -> LoadedWeights:
    from jaxasr_interp.weights import ct2
    params, dims = ct2.load_ct2(path, config=ct2.read_ct2_config(path.parent))
    return LoadedWeights(params, dims, _tokenizer_in(path.parent), source)


def _load_dir(directory: Path, source: str) -> LoadedWeights:
    from jaxasr_interp.weights import flax_msgpack, hf, orbax_io
    if orbax_io.is_orbax_dir(directory):
        params, dims = orbax_io.load_params_dir(directory)
        return LoadedWeights(params, dims, _tokenizer_in(directory), source)
    if (directory / "model.bin").is_file():
        return _load_ct2_file(directory / "model.bin", source)
    if hf.is_hf_dir(directory):
        params, dims = hf.load_hf_dir(directory)
        return LoadedWeights(params, dims, _tokenizer_in(directory), source)
    if flax_msgpack.is_flax_dir(directory):
        params, dims = flax_msgpack.load_flax_dir(directory)
        return LoadedWeights(params, dims, _tokenizer_in(directory), source)
    raise CheckpointError(
        f"{directory}: no checkpoint found (expected a CTranslate2 model.bin, a transformers config.json with "
        "model.safetensors, pytorch_model.bin or flax_model.msgpack, or a directory written by save_params)")


def _load_file(path: Path, source: str) -> LoadedWeights:
    from jaxasr_interp.weights import flax_msgpack, hf
    name = path.name.lower()
    if name.endswith(".pt") or name.endswith(".pth"):
        from jaxasr_interp.weights.openai_pt import load_openai_pt
        params, dims = load_openai_pt(path)
        return LoadedWeights(params, dims, None, source)
    if name.endswith(".bin"):
        if _is_torch_file(path):  # a pytorch_model.bin: load its transformers directory
            if hf.is_hf_dir(path.parent):
                return _load_dir(path.parent, source)
            raise CheckpointError(f"{path}: a PyTorch state dict without a transformers config.json beside it")
        return _load_ct2_file(path, source)
    if name.endswith((".safetensors", ".msgpack")) or name == "config.json":
        if hf.is_hf_dir(path.parent) or flax_msgpack.is_flax_dir(path.parent):
            return _load_dir(path.parent, source)
        raise CheckpointError(f"{path}: a transformers file without a complete checkpoint directory around it")
    raise _unknown(source)


def load_weights(source: str | os.PathLike) -> LoadedWeights:
    """Load Whisper weights from a bundled name, a local file or directory, or a hub id."""
    from jaxasr_interp.weights import bundled, hub
    text = os.fspath(source)
    if bundled.is_bundled(text):
        params, dims, tokenizer = bundled.load_bundled(text)
        return LoadedWeights(params, dims, tokenizer, text)
    path = Path(text).expanduser()
    if path.is_dir():
        return _load_dir(path, text)
    if path.is_file():
        return _load_file(path, text)
    if hub.looks_like_hub_id(text):
        directory = hub.hub_snapshot(text)
        loaded = _load_dir(directory, text)
        return dataclasses.replace(loaded, source=text)
    if any(sep in text for sep in ("/", os.sep)) or text.endswith((".pt", ".bin", ".safetensors")):
        raise CheckpointError(f"{text}: no such file or directory (expected one of {', '.join(known_names())}, "
                              "a local directory, a .pt file, a model.bin or a Hugging Face hub id like "
                              "openai/whisper-tiny)")
    raise _unknown(text)
