"""A minimal writer of CTranslate2 ``model.bin`` files (layout in :mod:`.ct2_file`), with
CTranslate2's bfloat16 rounding and int8/int16 weight quantization."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Mapping

import numpy as np

from jaxasr_interp.weights.ct2_format import CURRENT_BINARY_VERSION, NUMPY_DTYPES

_WRITE_DTYPES = (None, "float32", "float16", "bfloat16", "int8", "int16")
# numpy dtype of a non-float array -> CTranslate2 dtype id it is stored as
_INT_TYPE_IDS = {np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("bool"): 1}


def _f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16 bits (as uint16)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def _quantize_int8(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CTranslate2's int8 scheme: per output row, ``scale = 127 / max|w|``, ``round(w * scale)``."""
    w = np.asarray(w, np.float32)
    amax = np.amax(np.abs(w), axis=1)
    amax[amax == 0] = 127.0
    scale = (127.0 / amax).astype(np.float32)
    q = np.rint(w * np.expand_dims(scale, 1)).astype(np.int8)
    return q, scale


def _quantize_int16(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w, np.float32)
    scale = np.float32(2 ** 10 / max(float(np.amax(np.abs(w))), 1e-30))
    q = np.clip(np.rint(w * scale), -32768, 32767).astype(np.int16)
    return q, np.asarray(scale, np.float32)


def _records(named_arrays: Mapping[str, np.ndarray], dtype: str | None) -> dict[str, tuple[np.ndarray, int]]:
    """``name -> (C-ordered array, CTranslate2 dtype id)`` of every variable to write, with
    ``<name>_scale`` added for quantized weights (the ``dtype`` rules are :func:`write_ct2`'s)."""
    records: dict[str, tuple[np.ndarray, int]] = {}

    def add(name, value, type_id):
        if name in records:
            raise ValueError(f"variable {name!r} given twice")
        records[name] = (np.asarray(value, order="C"), type_id)

    for name, value in named_arrays.items():
        value = np.asarray(value)
        is_float = value.dtype.kind == "f"
        if not is_float:
            type_id = _INT_TYPE_IDS.get(value.dtype)
            if type_id is None:
                raise ValueError(f"{name}: cannot store dtype {value.dtype}")
            add(name, value.astype(NUMPY_DTYPES[type_id]), type_id)
        elif dtype in ("int8", "int16") and value.ndim == 2 and name.endswith("weight"):
            q, scale = (_quantize_int8 if dtype == "int8" else _quantize_int16)(value)
            add(name, q, 1 if dtype == "int8" else 2)
            add(name + "_scale", scale, 0)
        elif dtype == "float16" or (dtype is None and value.dtype == np.float16):
            add(name, value.astype("<f2"), 4)
        elif dtype == "bfloat16" and value.ndim > 0:
            add(name, _f32_to_bf16_bits(value), 5)
        else:
            add(name, value.astype("<f4"), 0)
    return records


def _write_str(fh: BinaryIO, s: str) -> None:
    raw = s.encode("utf-8")
    fh.write(struct.pack("<H", len(raw) + 1) + raw + b"\0")


def _write_variable(fh: BinaryIO, name: str, value: np.ndarray, type_id: int) -> None:
    _write_str(fh, name)
    fh.write(struct.pack("<B", value.ndim))
    fh.write(struct.pack(f"<{value.ndim}I", *value.shape))
    fh.write(struct.pack("<BI", type_id, value.nbytes))
    fh.write(value.astype(NUMPY_DTYPES[type_id], copy=False).tobytes())


def write_ct2(path: str | os.PathLike, named_arrays: Mapping[str, np.ndarray],
              spec_name: str = "WhisperSpec", aliases: Mapping[str, str] | None = None,
              dtype: str | None = None, *, spec_revision: int = 3,
              binary_version: int = CURRENT_BINARY_VERSION) -> Path:
    """Write a ``model.bin`` (a minimal writer, for tests and small conversions).

    ``dtype``: None keeps every array's numpy dtype (float32/float16/int8/int16/int32);
    ``"float32"``, ``"float16"`` or ``"bfloat16"`` converts every float tensor (not scalars);
    ``"int8"``/``"int16"`` quantize every float tensor of rank 2 whose name ends in ``weight``
    the way CTranslate2 does (adding ``<name>_scale``) and keep the rest in float32.
    Variables are written in name order, as CTranslate2 does.
    """
    if dtype not in _WRITE_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}")
    records = _records(named_arrays, dtype)
    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<I", binary_version))
        _write_str(fh, spec_name)
        fh.write(struct.pack("<I", spec_revision))
        fh.write(struct.pack("<I", len(records)))
        for name in sorted(records):
            _write_variable(fh, name, *records[name])
        aliases = dict(aliases or {})
        fh.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            _write_str(fh, alias)
            _write_str(fh, target)
    return path
