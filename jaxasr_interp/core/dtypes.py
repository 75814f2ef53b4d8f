"""Compute dtypes and matmul precisions: the names accepted everywhere, and their defaults.

Every analysis takes ``dtype=`` and ``precision=``:

- ``dtype``: ``"float32"`` or ``"bfloat16"``, as a string or a JAX/numpy dtype. It is the
  dtype of the matmuls (LayerNorm and softmax stay float32 whatever it is, see
  :mod:`.layers`). ``None`` means the parameters' storage dtype (:func:`compute_dtype`):
  bfloat16 when every floating parameter is stored in bfloat16
  (``load(..., dtype="bfloat16")``), float32 otherwise, so a float32 model computes exactly as
  before. An explicit dtype wins: float32 over bfloat16-stored parameters widens each
  parameter inside the compiled program (no float32 copy is kept outside it).
- ``precision``: ``"highest"`` (float32-exact matmuls on GPU/TPU too), ``"high"`` or
  ``"default"`` (the backend's fast passes: TF32 / bf16), or ``None`` (JAX's configured
  default). It only matters on GPU/TPU; CPU matmuls are float32-exact at every setting.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
PRECISIONS = ("highest", "high", "default")


def as_dtype(dtype):
    """``"float32"`` / ``"bfloat16"`` (or the JAX/numpy dtype) -> ``jnp.float32`` /
    ``jnp.bfloat16``; ``None`` stays ``None``. Anything else is a one-line ``ValueError``."""
    if dtype is None:
        return None
    try:
        name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: use {' or '.join(DTYPES)}")
    return DTYPES[name]


def as_precision(precision):
    """``"highest"`` / ``"high"`` / ``"default"`` (or ``None``, JAX's configured default), checked."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    return precision


def matmul_precision(precision):
    """A context setting JAX's default matmul precision while tracing (``None``: left as it is)."""
    return contextlib.nullcontext() if precision is None else jax.default_matmul_precision(precision)


def storage_dtype(params):
    """``jnp.bfloat16`` when every floating leaf of ``params`` is bfloat16, else ``jnp.float32``."""
    dtypes = {a.dtype for a in jax.tree_util.tree_leaves(params) if jnp.issubdtype(a.dtype, jnp.floating)}
    return jnp.bfloat16 if dtypes == {jnp.dtype(jnp.bfloat16)} else jnp.float32


def compute_dtype(dtype, params):
    """The compute dtype of a call: ``dtype`` checked (:func:`as_dtype`), or, when it is
    ``None``, the storage dtype of ``params`` (:func:`storage_dtype`)."""
    dtype = as_dtype(dtype)
    return storage_dtype(params) if dtype is None else dtype
