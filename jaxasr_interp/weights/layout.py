"""The parameter tree and a checked way to fill it.

Names follow openai/whisper (``encoder.blocks[i].attn.query`` ...), with Flax conventions for
the leaves: a linear layer is ``{"kernel": [in, out], "bias": [out]}`` (``y = x @ kernel + bias``),
a conv is ``{"kernel": [width, in, out], "bias": [out]}``, a LayerNorm is ``{"scale", "bias"}``.
The blocks of each stack are stacked on a leading layer axis ``[L, ...]`` so that the model can
``lax.scan`` over them. The key projections have no bias, as in the reference.

Every converter goes through :class:`ParamFiller`: it starts from the shapes implied by
``Dims``, checks the shape of every tensor it is given, refuses a second fill of the same slot,
and on ``finish`` refuses any slot left empty. :class:`TensorSource` does the same on the
checkpoint side: a tensor that no rule consumed is an error, never silently dropped.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from jaxasr_interp.whisper.config import Dims


def linear_shapes(n_in, n_out, bias=True, layers=None):
    lead = () if layers is None else (layers,)
    leaf = {"kernel": lead + (n_in, n_out)}
    if bias:
        leaf["bias"] = lead + (n_out,)
    return leaf


def _norm(d, layers=None):
    lead = () if layers is None else (layers,)
    return {"scale": lead + (d,), "bias": lead + (d,)}


def _attention(d, layers):
    return {
        "query": linear_shapes(d, d, layers=layers),
        "key": linear_shapes(d, d, bias=False, layers=layers),
        "value": linear_shapes(d, d, layers=layers),
        "out": linear_shapes(d, d, layers=layers),
    }


def _mlp(d, ffn, layers):
    return {"mlp_ln": _norm(d, layers), "mlp1": linear_shapes(d, ffn, layers=layers),
            "mlp2": linear_shapes(ffn, d, layers=layers)}


def encoder_shapes(n_mels: int, n_ctx: int, d: int, layers: int, ffn: int | None = None) -> dict:
    """The Whisper audio encoder's parameter shapes (also Qwen2-Audio's encoder); ``ffn`` is the
    MLP width (default ``4 * d``)."""
    return {
        "conv1": {"kernel": (3, n_mels, d), "bias": (d,)},
        "conv2": {"kernel": (3, d, d), "bias": (d,)},
        "positional_embedding": {"embedding": (n_ctx, d)},
        "blocks": {"attn_ln": _norm(d, layers), "attn": _attention(d, layers),
                   **_mlp(d, 4 * d if ffn is None else ffn, layers)},
        "ln_post": _norm(d),
    }


def param_shapes(dims: Dims) -> dict:
    """The full parameter tree of a Whisper model as nested dicts of shape tuples."""
    da, dt = dims.n_audio_state, dims.n_text_state
    la, lt = dims.n_audio_layer, dims.n_text_layer
    return {
        "encoder": encoder_shapes(dims.n_mels, dims.n_audio_ctx, da, la, dims.n_audio_ffn),
        "decoder": {
            "token_embedding": {"embedding": (dims.n_vocab, dt)},
            "positional_embedding": {"embedding": (dims.n_text_ctx, dt)},
            "blocks": {"attn_ln": _norm(dt, lt), "attn": _attention(dt, lt),
                       "cross_attn_ln": _norm(dt, lt), "cross_attn": _attention(dt, lt),
                       **_mlp(dt, dims.n_text_ffn, lt)},
            "ln": _norm(dt),
        },
    }


def iter_paths(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``("encoder/blocks/attn/query/kernel", leaf)`` pairs in a fixed order."""
    for key in sorted(tree):
        value = tree[key]
        path = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            yield from iter_paths(value, path)
        else:
            yield path, value


def set_path(tree: dict, path: str, value) -> None:
    *parents, last = path.split("/")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[last] = value


def is_stacked(path: str) -> bool:
    return "/blocks/" in path


class CheckpointError(ValueError):
    """A checkpoint whose tensors do not make a complete, well-shaped Whisper model."""


class ParamFiller:
    """Fill every slot of ``param_shapes(dims)`` exactly once, checking shapes."""

    def __init__(self, dims: Dims, source: str = "checkpoint"):
        self.dims = dims
        self.source = source
        self.shapes = dict(iter_paths(param_shapes(dims)))
        self.values: dict[str, np.ndarray] = {}
        self.filled: dict[str, np.ndarray] = {}  # stacked path -> bool per layer

    def put(self, path: str, array, layer: int | None = None, origin: str = "?") -> None:
        if path not in self.shapes:
            raise CheckpointError(f"{self.source}: tensor {origin!r} maps to unknown parameter {path!r}")
        shape = self.shapes[path]
        array = np.asarray(array, dtype=np.float32)
        if is_stacked(path):
            if layer is None or not 0 <= layer < shape[0]:
                raise CheckpointError(f"{self.source}: tensor {origin!r} has layer index {layer} "
                                      f"outside 0..{shape[0] - 1} for {path!r}")
            want = shape[1:]
            if path not in self.values:
                self.values[path] = np.zeros(shape, np.float32)
                self.filled[path] = np.zeros(shape[0], bool)
            if self.filled[path][layer]:
                raise CheckpointError(f"{self.source}: {path!r} layer {layer} filled twice (again by {origin!r})")
        else:
            want = shape
            if path in self.values:
                raise CheckpointError(f"{self.source}: {path!r} filled twice (again by {origin!r})")
        if tuple(array.shape) != tuple(want):
            raise CheckpointError(f"{self.source}: tensor {origin!r} has shape {tuple(array.shape)}, "
                                  f"expected {tuple(want)} for {path!r}")
        if is_stacked(path):
            self.values[path][layer] = array
            self.filled[path][layer] = True
        else:
            self.values[path] = array

    def finish(self) -> dict:
        missing = []
        for path in self.shapes:
            if path not in self.values:
                missing.append(path)
            elif is_stacked(path) and not self.filled[path].all():
                missing += [f"{path}[layer {i}]" for i in np.flatnonzero(~self.filled[path])]
        if missing:
            shown = ", ".join(missing[:8]) + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
            raise CheckpointError(f"{self.source}: missing tensors for {shown}")
        params: dict = {}
        for path, value in self.values.items():
            set_path(params, path, value)
        return params


class TensorSource:
    """A checkpoint's named tensors; every one must be taken by some conversion rule."""

    def __init__(self, tensors: Mapping[str, Any], source: str = "checkpoint"):
        self.tensors = dict(tensors)
        self.source = source
        self.taken: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise CheckpointError(f"{self.source}: missing tensor {name!r}")
        if name in self.taken:
            raise CheckpointError(f"{self.source}: tensor {name!r} used twice")
        self.taken.add(name)
        return np.asarray(self.tensors[name])

    def skip(self, name: str) -> None:
        """Mark a tensor as deliberately unused (a buffer the model recomputes, say)."""
        if name in self.tensors:
            self.taken.add(name)

    def check_all_taken(self) -> None:
        extra = sorted(set(self.tensors) - self.taken)
        if extra:
            shown = ", ".join(extra[:8]) + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
            raise CheckpointError(f"{self.source}: unexpected tensors not part of a Whisper model: {shown}")


def torch_to_flax(array: np.ndarray, kind: str) -> np.ndarray:
    """A torch tensor in Flax layout: ``linear`` [out, in] -> [in, out]; ``conv`` [out, in,
    width] -> [width, in, out]; anything else unchanged. Each transpose is its own inverse."""
    if kind == "linear":
        return array.T
    if kind == "conv":
        return array.transpose(2, 1, 0)
    return array


def state_dict_by_table(params: Mapping[str, Any], table) -> dict[str, np.ndarray]:
    """Export params to torch names and layouts along rows ``(path, layer, name, kind)``."""
    flat = dict(iter_paths(params))
    out = {}
    for path, layer, name, kind in table:
        value = np.asarray(flat[path], np.float32)
        value = value[layer] if layer is not None else value
        out[name] = np.ascontiguousarray(torch_to_flax(value, kind))
    return out
