"""Whisper's parameters sharded over a mesh axis, FSDP-style (ZeRO-3).

:func:`shard_params` splits every large leaf along one of its axes over a mesh axis (default
``"batch"``, the axis :mod:`jaxasr_interp.core.sharding` splits batches and sweeps over, so
parameters and work share one 1-D mesh) and replicates the small ones (biases, LayerNorms,
the convolution stem's first kernel, the decoder's positions). Each device then holds about
``1 / n`` of the model; under ``jit`` GSPMD gathers a layer's weights where they are used
(or, when that is cheaper, keeps the product split along the weight's features and gathers
the activations), and every model function runs unchanged with the same numbers as on one
device (tested with 8 host devices).

Which axis is split (:func:`partition_spec`): the largest axis, other than the stacked layer
axis of a block leaf, whose size divides by the mesh axis. The layer axis is never split:
``lax.scan`` slices one layer out of the stack at every step, and a dynamic slice along a split
axis makes GSPMD gather the whole stack first, which is the memory this avoids. Qwen2-Audio's
parameters are sharded Megatron-style instead (:func:`jaxasr_interp.qwen2_audio.shard_params`).
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxasr_interp.core.dtypes import as_dtype
from jaxasr_interp.core.engine import unwrap
from jaxasr_interp.core.sharding import AXIS, batch_mesh
from jaxasr_interp.weights.layout import is_stacked, iter_paths, set_path

# Leaves below 2**20 elements (4 MiB in float32; large-v3's largest is a 32 x 5120 bias, 0.6 MiB)
# stay replicated: splitting them saves little and adds a gather for each.
MIN_ELEMENTS = 2 ** 20


def partition_spec(path: str, shape: tuple, n_shards: int, axis: str = AXIS,
                   min_elements: int = MIN_ELEMENTS) -> P:
    """The PartitionSpec of one parameter: its largest evenly divisible axis (not the layer
    axis of a block leaf) split over ``axis``, or replicated when it has fewer than
    ``min_elements`` elements or no such axis."""
    if n_shards == 1 or math.prod(shape) < min_elements:
        return P()
    first = 1 if is_stacked(path) else 0
    candidates = [a for a in range(first, len(shape)) if shape[a] % n_shards == 0]
    if not candidates:
        return P()
    split = max(candidates, key=lambda a: (shape[a], a))  # ties: the later (output) axis
    spec = [None] * len(shape)
    spec[split] = axis
    return P(*spec)


def shard_params(params, mesh: Mesh | None = None, axis: str = AXIS, dtype=None,
                 min_elements: int = MIN_ELEMENTS) -> dict:
    """``params`` (a Whisper tree, or ``{"params": tree}``) placed on ``mesh`` (default: all
    devices, :func:`~jaxasr_interp.core.sharding.batch_mesh`) as :func:`partition_spec` says,
    optionally cast to ``dtype`` first (e.g. ``"bfloat16"``: half the bytes). Returns the bare
    tree; for a :class:`~jaxasr_interp.whisper.api.Model`:
    ``dataclasses.replace(model, params=shard_params(model.params))``."""
    mesh, dtype = batch_mesh() if mesh is None else mesh, as_dtype(dtype)
    n = mesh.shape[axis]
    out: dict = {}
    for path, value in iter_paths(unwrap(params)):
        value = value if dtype is None else value.astype(dtype)
        spec = partition_spec(path, tuple(np.shape(value)), n, axis, min_elements)
        set_path(out, path, jax.device_put(value, NamedSharding(mesh, spec)))
    return out


def bytes_per_device(params) -> int:
    """Bytes one device holds of a placed parameter tree (the largest shard of each leaf)."""
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
               for x in jax.tree_util.tree_leaves(params))
