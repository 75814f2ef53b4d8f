"""Sharding a sweep or batch axis over all devices.

Every batched entry point (transcription, the encoder lens, feature extraction, probe sweeps,
patching sweeps over clips) places the leading axis of its batched inputs with
:func:`shard_leading` before calling its jitted program; GSPMD then partitions the program
along that axis, so each device computes its share and nothing else changes: the same program,
the same numbers as on one device (tested with 8 host devices).

With one device every function here is a no-op. On a multi-host TPU pod slice, call
``jax.distributed.initialize()`` first on every host (see the README): ``jax.devices()`` then
lists the devices of all hosts and :func:`batch_mesh` spans them.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def batch_mesh(devices=None) -> Mesh:
    """A 1-D mesh named ``"batch"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.array(devices), (AXIS,))


def padded_size(n: int, mesh: Mesh | None = None) -> int:
    """``n`` rounded up to a multiple of the mesh size (pad a batch to this to shard it)."""
    size = (mesh or batch_mesh()).size
    return -(-n // size) * size


def shard_leading(tree, mesh: Mesh | None = None):
    """Place every array leaf with its leading axis split over the mesh (replicated when that
    axis does not divide evenly, or with a single device)."""
    mesh = mesh or batch_mesh()
    if mesh.size == 1:
        return tree

    def place(x):
        if np.ndim(x) == 0 or np.shape(x)[0] % mesh.size:
            return jax.device_put(x, NamedSharding(mesh, PartitionSpec()))
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec(AXIS)))
    return jax.tree_util.tree_map(place, tree)

