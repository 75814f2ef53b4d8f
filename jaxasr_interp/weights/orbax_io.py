"""Save and restore converted parameters with orbax-checkpoint.

A directory written by :func:`save_params` holds::

    params/          the parameter tree (orbax StandardCheckpointer, float32 numpy leaves)
    dims.json        the Dims fields
    tokenizer.json   a copy of the tokenizer, when one was given

Restoring goes through :class:`ParamFiller`/:class:`TensorSource` like every other format, so
a tree that does not match ``dims`` exactly is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights.layout import CheckpointError, ParamFiller, TensorSource, iter_paths

PARAMS_DIR = "params"
DIMS_FILE = "dims.json"
TOKENIZER_FILE = "tokenizer.json"


def is_orbax_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / DIMS_FILE).is_file() and (path / PARAMS_DIR).is_dir()


def save_params(params: Mapping, dims: Dims, directory: str | os.PathLike,
                tokenizer_file: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write ``params`` (checked against ``dims``) and ``dims`` to ``directory``."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    # Check the tree before writing anything: the same rules as loading.
    tensors = TensorSource(dict(iter_paths(params)), "params to save")
    filler = ParamFiller(dims, "params to save")
    for path, shape in filler.shapes.items():
        value = tensors.take(path)
        if np.shape(value) != shape:
            raise CheckpointError(f"params to save: {path!r} has shape {np.shape(value)}, expected {shape}")
    tensors.check_all_taken()
    tree = {}
    for path, value in iter_paths(params):
        node = tree
        *parents, last = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = np.asarray(value, dtype=np.float32)
    if (directory / PARAMS_DIR).exists() and not overwrite:
        raise CheckpointError(f"{directory / PARAMS_DIR} exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / PARAMS_DIR, tree, force=overwrite)
        ckptr.wait_until_finished()
    (directory / DIMS_FILE).write_text(json.dumps(dataclasses.asdict(dims), indent=2) + "\n")
    if tokenizer_file is not None:
        shutil.copyfile(tokenizer_file, directory / TOKENIZER_FILE)
    return directory


def load_params_dir(directory: str | os.PathLike) -> tuple[dict, Dims]:
    """``(params, dims)`` from a directory written by :func:`save_params`; float32 numpy leaves."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    if not is_orbax_dir(directory):
        raise CheckpointError(f"{directory}: not a directory written by save_params "
                              f"(needs {DIMS_FILE} and {PARAMS_DIR}/)")
    try:
        raw = json.loads((directory / DIMS_FILE).read_text())
        # fields with a default (the FFN widths) may be absent from files written before them
        dims = Dims(**{f.name: raw[f.name] for f in dataclasses.fields(Dims)
                       if f.name in raw or f.default is dataclasses.MISSING})
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{directory / DIMS_FILE}: invalid dims ({e.__class__.__name__}: {e})") from None
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(directory / PARAMS_DIR)
    except Exception as e:  # orbax raises many kinds of errors for damaged checkpoints
        raise CheckpointError(f"{directory / PARAMS_DIR}: cannot restore the orbax checkpoint "
                              f"({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    source = str(directory)
    # checkpoints written before the embeddings became Flax ``{"embedding": ...}`` leaves
    flat = {f"{k}/embedding" if k.endswith("_embedding") else k: v for k, v in iter_paths(restored)}
    tensors = TensorSource(flat, source)
    filler = ParamFiller(dims, source)
    for path in filler.shapes:
        value = np.asarray(tensors.take(path))
        if value.dtype != np.float32:
            raise CheckpointError(f"{source}: {path!r} was stored as {value.dtype}, expected float32")
        if path.find("/blocks/") >= 0:
            for layer in range(value.shape[0] if value.ndim else 0):
                filler.put(path, value[layer], layer=layer, origin=path)
            if value.ndim == 0 or value.shape[0] != filler.shapes[path][0]:
                raise CheckpointError(f"{source}: {path!r} has shape {value.shape}, expected {filler.shapes[path]}")
        else:
            filler.put(path, value, origin=path)
    tensors.check_all_taken()
    return filler.finish(), dims
