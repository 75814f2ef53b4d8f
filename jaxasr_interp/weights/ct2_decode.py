"""Decoding a parsed CTranslate2 ``model.bin`` to float32: bf16/f16 widened, int8/int16
weights dequantized as CTranslate2's ``Dequantize`` op does, aliases resolved."""

from __future__ import annotations

import numpy as np

from jaxasr_interp.weights.ct2_format import Ct2File
from jaxasr_interp.weights.layout import CheckpointError


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def decoded_variables(ct2: Ct2File) -> dict[str, np.ndarray]:
    """Float32 tensors (int8/int16 weights dequantized with their scale, scale consumed),
    integer scalars as 0-d arrays, and aliases resolved to their target's value."""
    out: dict[str, np.ndarray] = {}
    scales_used: set[str] = set()
    for name, value in ct2.variables.items():
        dtype = ct2.dtypes[name]
        if dtype == "bfloat16":
            out[name] = _bf16_to_f32(value)
        elif dtype in ("float16", "float32"):
            out[name] = value.astype(np.float32)
        elif value.ndim == 0:  # integer scalar (num_heads, flags ...)
            out[name] = value.copy()
        elif name + "_scale" in ct2.variables:
            scale_name = name + "_scale"
            scale = ct2.variables[scale_name]
            scale_dtype = ct2.dtypes[scale_name]
            scale = _bf16_to_f32(scale) if scale_dtype == "bfloat16" else scale.astype(np.float32)
            values = value.astype(np.float32)
            if scale.ndim == 0:
                out[name] = values / scale
            elif scale.shape == value.shape[:1] + value.shape[2:]:
                out[name] = values / np.expand_dims(scale, 1)
            else:
                raise CheckpointError(f"{ct2.source}: {dtype} tensor {name!r} of shape {value.shape} has a "
                                      f"scale {scale_name!r} of shape {scale.shape}, expected "
                                      f"{value.shape[:1] + value.shape[2:]} or a scalar")
            scales_used.add(scale_name)
        else:
            raise CheckpointError(f"{ct2.source}: {dtype} tensor {name!r} has no {name + '_scale'!r} "
                                  "to dequantize it with")
    for s in scales_used:
        del out[s]
    for alias, target in ct2.aliases.items():
        out[alias] = out[target]
        # Model::load also aliases the scales; they were consumed by the dequantization above.
    return out
