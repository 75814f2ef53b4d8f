"""Running the real Qwen2-Audio-7B: parameters sharded over a device mesh, and a memory estimate.

:func:`shard_params` places the parameter tree on a ``jax.sharding.Mesh`` with Megatron-style
tensor parallelism over one mesh axis (default ``"model"``): the query/key/value, gate and up
kernels are split along their output features, the attention-output and down kernels along
their input features (the q/k/v biases with their outputs), the token embedding and ``lm_head``
along the vocabulary; norms and the (small) audio encoder and projector are replicated. An axis that does
not divide evenly stays replicated. The pure functions of :mod:`.model` then run unchanged
under ``jit``: XLA's sharding propagation inserts the collectives, and results equal the
single-device ones (tested on a one-device mesh here; see notes/readme_qwen2_audio.md).

:func:`memory_estimate` counts bytes from the parameter shapes, so it follows the config.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxasr_interp.weights.layout import iter_paths, set_path
from jaxasr_interp.qwen2_audio.config import QwenAudioDims
from jaxasr_interp.qwen2_audio.weights import param_shapes

# (path suffix, axis split) for the decoder's kernels; the leading axis of a block leaf is the layer.
_SPLIT = {"attn/query/kernel": -1, "attn/query/bias": -1, "attn/key/kernel": -1, "attn/key/bias": -1,
          "attn/value/kernel": -1, "attn/value/bias": -1, "attn/out/kernel": -2,
          "mlp/gate/kernel": -1, "mlp/up/kernel": -1, "mlp/down/kernel": -2,
          "decoder/token_embedding/embedding": 0, "decoder/lm_head/kernel": -1}


def partition_spec(path: str, shape: tuple, n_shards: int, axis: str = "model") -> P:
    """The PartitionSpec of one parameter (replicated unless listed and evenly divisible)."""
    if not path.startswith("decoder/"):
        return P()
    split = next((a for suffix, a in _SPLIT.items() if path.endswith(suffix)), None)
    if split is None or shape[split] % n_shards:
        return P()
    spec = [None] * len(shape)
    spec[split % len(shape)] = axis
    return P(*spec)


def shard_params(params, mesh: jax.sharding.Mesh, axis: str = "model", dtype=None) -> dict:
    """``params`` placed on ``mesh`` (optionally cast to ``dtype``, e.g. ``jnp.bfloat16``)."""
    if any(t == jax.sharding.AxisType.Explicit for t in getattr(mesh, "axis_types", ())):
        # explicit axes make every sharded gather (the embedding lookup) a typing decision
        raise ValueError("shard_params needs a mesh with automatic axes: jax.make_mesh(shape, names, "
                         "axis_types=(jax.sharding.AxisType.Auto,) * len(names))")
    n = mesh.shape[axis]
    out: dict = {}
    for path, value in iter_paths(params):
        value = value if dtype is None else value.astype(dtype)
        spec = partition_spec(path, tuple(np.shape(value)), n, axis)
        set_path(out, path, jax.device_put(value, NamedSharding(mesh, spec)))
    return out


def memory_estimate(dims: QwenAudioDims, *, bytes_per_param: int = 2, n_devices: int = 1,
                    context: int = 1024) -> dict:
    """Bytes for the parameters (in all, and per device as :func:`shard_params` places them
    over ``n_devices``), the KV cache of one utterance of ``context`` positions, and the
    largest single activations of a teacher-forced pass (float32)."""
    shapes = list(iter_paths(param_shapes(dims)))
    n_params = sum(math.prod(s) for _, s in shapes)
    per_device = sum(math.prod(s) // (n_devices if partition_spec(p, s, n_devices) != P() else 1)
                     for p, s in shapes)
    return {"n_params": n_params, "param_bytes": n_params * bytes_per_param,
            "param_bytes_per_device": per_device * bytes_per_param,
            "kv_cache_bytes": 2 * dims.n_text_layer * dims.n_kv_head * dims.d_head * context * bytes_per_param,
            "encoder_pattern_bytes": 4 * dims.n_audio_head * dims.n_audio_ctx ** 2,
            "logits_bytes": 4 * context * dims.n_vocab}
