"""Sharding a sweep or batch axis over all devices.

Every batched entry point (transcription, the encoder lens, feature extraction, probe sweeps,
patching sweeps over clips) places the leading axis of its batched inputs with
:func:`shard_leading` before calling its jitted program; GSPMD then partitions the program
along that axis, so each device computes its share and nothing else changes: the same program,
the same numbers as on one device (tested with 8 host devices). Inside a jitted program, the
patching sweeps and the encoder lens split their sweep axis with :func:`map_chunks` (padded to
a multiple of the device count, the padding cut off after). Parameters can be split over the
same axis too (:func:`jaxasr_interp.whisper.sharding.shard_params`, FSDP-style).

With one device every function here is a no-op (:func:`map_chunks` is then exactly
``lax.map(f, xs, batch_size=divisor(n, chunk))``). On a multi-host TPU pod slice, call
``jax.distributed.initialize()`` first on every host (see the README): ``jax.devices()`` then
lists the devices of all hosts and :func:`batch_mesh` spans them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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


def split_axis(tree, dim: int = 0, mesh: Mesh | None = None):
    """Inside ``jit``: every leaf's axis ``dim`` constrained to be split over the mesh (leaves
    where it does not divide evenly are left to GSPMD; a no-op with one device)."""
    mesh = mesh or batch_mesh()
    if mesh.size == 1:
        return tree

    def constrain(x):
        if jnp.ndim(x) <= dim or jnp.shape(x)[dim] % mesh.size:
            return x
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*(None,) * dim, AXIS)))
    return jax.tree_util.tree_map(constrain, tree)


def divisor(n: int, chunk: int) -> int:
    """The largest divisor of ``n`` not above ``chunk``: ``lax.map`` then needs no remainder
    pass, which would compile the whole body a second time."""
    return max(d for d in range(1, max(1, min(n, chunk)) + 1) if n % d == 0)


def _pad_rows(x, total: int):
    extra = total - x.shape[0]
    return x if extra == 0 else jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)])


def _scan_chunks(fn, xs, steps: int, mesh: Mesh):
    """``fn`` over ``steps`` equal chunks of the leading axis (a ``lax.scan``), each chunk's
    rows split over the mesh; the result in the order of ``xs``.

    With ``n`` devices, device ``d`` holds the ``d``-th contiguous block of ``xs``; step ``s``
    takes the ``s``-th slice of every device's block (rows interleaved), so no row moves
    between devices."""
    size = mesh.size

    def to_chunks(x):
        if size == 1:
            return x.reshape((steps, -1) + x.shape[1:])
        x = x.reshape((size, steps, -1) + x.shape[1:]).swapaxes(0, 1)
        return x.reshape((steps, -1) + x.shape[3:])

    def from_chunks(y):
        if size == 1:
            return y.reshape((-1,) + y.shape[2:])
        y = y.reshape((steps, size, -1) + y.shape[2:]).swapaxes(0, 1)
        return y.reshape((-1,) + y.shape[3:])

    body = lambda _, x: ((), split_axis(fn(split_axis(x, 0, mesh)), 0, mesh))
    _, ys = jax.lax.scan(body, (), split_axis(jax.tree_util.tree_map(to_chunks, xs), 1, mesh))
    return jax.tree_util.tree_map(from_chunks, ys)


def map_chunks(fn, xs, chunk: int | None = None, mesh: Mesh | None = None):
    """``fn`` (batched: a pytree of ``[c, ...]`` -> ``[c, ...]``) over the leading axis of
    ``xs`` ([N, ...]), ``chunk`` rows at a time (None: all at once), each chunk split over the
    mesh. Inside ``jit``.

    One device: ``chunk`` rows per step (rounded down to a divisor of N), exactly as
    ``lax.map(f, xs, batch_size=...)`` with ``fn = vmap(f)``. ``n`` devices: ``chunk`` rows *per
    device* per step (so per-device memory is that of one device), N padded (with copies of
    the last row) to a multiple of the rows per step and the padding cut off the result.
    """
    mesh = mesh or batch_mesh()
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if mesh.size == 1:
        if chunk is None:
            return fn(xs)
        return _scan_chunks(fn, xs, n // divisor(n, chunk), mesh)
    per_device = -(-n // mesh.size) if chunk is None else min(chunk, -(-n // mesh.size))
    step = per_device * mesh.size
    steps = -(-n // step)
    xs = jax.tree_util.tree_map(lambda x: _pad_rows(x, steps * step), xs)
    if steps == 1:
        ys = split_axis(fn(split_axis(xs, 0, mesh)), 0, mesh)
    else:
        ys = _scan_chunks(fn, xs, steps, mesh)
    return jax.tree_util.tree_map(lambda y: y[:n], ys)
