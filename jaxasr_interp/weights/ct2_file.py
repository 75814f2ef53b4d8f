"""CTranslate2 ``model.bin`` (faster-whisper's format): the binary reader and a minimal writer.

File layout (little-endian), as written by ``ctranslate2/specs/model_spec.py`` and read by
``src/models/model.cc``::

    u32 binary_version                         (files in the wild: 6; 1..6 are understood)
    str spec_name, u32 spec_revision           (binary_version >= 2)
    u32 n_variables, then per variable:
        str name, u8 rank, u32 dims[rank],
        u8 dtype_id, u32 nbytes                (binary_version >= 4; dtype ids below)
        u8 item_size, u32 n_items              (binary_version < 4: 4 -> f32, 2 -> i16, 1 -> i8)
        raw bytes
    u32 n_aliases, then (str alias, str target) pairs   (binary_version >= 3)

where ``str`` is a u16 length that counts a trailing NUL, then the bytes and the NUL.
Weights quantized to int8/int16 come with ``<name>_scale`` and are dequantized as CTranslate2's
``Dequantize`` op does: ``weight / scale`` per output row (``scale`` has the weight's shape
without axis 1, or is a scalar for the per-layer int16 scheme). An alias ``a -> t`` also
aliases ``a_scale -> t_scale``, as in ``Model::load``.

The Whisper mapping onto our parameters is :mod:`.ct2`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from jaxasr_interp.weights.layout import CheckpointError

CURRENT_BINARY_VERSION = 6

# Order matches the DataType enum of include/ctranslate2/types.h.
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                 4: np.dtype("<f2"), 5: np.dtype("<u2")}  # bf16 is kept as raw uint16 bits
_ITEM_SIZE_DTYPES = {4: 0, 2: 2, 1: 1}  # binary_version < 4: the dtype was guessed from the item size
_MAX_RANK = 8


# ----------------------------------------------------------------------------------- reading


@dataclasses.dataclass
class Ct2File:
    """The raw content of a ``model.bin``: variables in their stored dtype (bf16 as uint16 bits)."""
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]  # variable name -> CTranslate2 dtype name
    aliases: dict[str, str]  # alias -> target
    source: str


class _PartsReader:
    """Read a byte stream that is the concatenation of one or more files, in order."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)
        self.sizes = []
        for p in self.paths:
            try:
                self.sizes.append(p.stat().st_size)
            except OSError as e:
                raise CheckpointError(f"{p}: cannot read CTranslate2 model file ({e.strerror})") from None
        self.total = sum(self.sizes)
        self.pos = 0
        self._index = 0
        self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    @property
    def remaining(self) -> int:
        return self.total - self.pos

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at the end of the last part."""
        chunks = []
        want = n
        while want > 0 and self._index < len(self.paths):
            if self._fh is None:
                self._fh = open(self.paths[self._index], "rb")
            chunk = self._fh.read(want)
            if chunk:
                chunks.append(chunk)
                want -= len(chunk)
            if want > 0:  # this part is exhausted: go on with the next one
                self._fh.close()
                self._fh = None
                self._index += 1
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.pos += len(data)
        return data


def _as_paths(path_or_parts) -> list[Path]:
    if isinstance(path_or_parts, (str, os.PathLike)):
        return [Path(path_or_parts)]
    paths = [Path(p) for p in path_or_parts]
    if not paths:
        raise CheckpointError("read_ct2 needs at least one file")
    return paths


def _describe(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)


def read_ct2(path_or_parts: str | os.PathLike | Sequence[str | os.PathLike]) -> Ct2File:
    """Parse a CTranslate2 ``model.bin``, or its split parts read in order as one stream.

    Any truncation or inconsistency raises :class:`CheckpointError` naming the file and the
    variable being read.
    """
    paths = _as_paths(path_or_parts)
    source = _describe(paths)
    where = "the header"

    def fail(what: str):
        raise CheckpointError(f"{source}: {what} (at byte {r.pos} while reading {where})")

    def take(n: int) -> bytes:
        if n > r.remaining:
            fail(f"truncated: {n} bytes needed but only {r.remaining} left")
        data = r.read(n)
        if len(data) != n:  # the file changed under us
            fail(f"truncated: {n} bytes needed but only {len(data)} read")
        return data

    def u8() -> int:
        return take(1)[0]

    def u16() -> int:
        return struct.unpack("<H", take(2))[0]

    def u32() -> int:
        return struct.unpack("<I", take(4))[0]

    def string() -> str:
        n = u16()
        if n == 0:
            fail("corrupt: a string of length 0 (the length counts a trailing NUL)")
        raw = take(n)
        if raw[-1] != 0:
            fail(f"corrupt: a string of length {n} does not end with NUL")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            fail("corrupt: a string is not valid UTF-8")

    with _PartsReader(paths) as r:
        if r.total == 0:
            raise CheckpointError(f"{source}: empty file, not a CTranslate2 model.bin")
        version = u32()
        if not 1 <= version <= CURRENT_BINARY_VERSION:
            fail(f"not a CTranslate2 model.bin, or an unsupported binary version {version} "
                 f"(this reader knows versions 1 to {CURRENT_BINARY_VERSION})")
        spec_name, revision = ("", 1)
        if version >= 2:
            spec_name = string()
            revision = u32()
        n_vars = u32()
        variables: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for i in range(n_vars):
            where = f"variable {i}"
            name = string()
            where = f"variable {i} {name!r}"
            rank = u8()
            if rank > _MAX_RANK:
                fail(f"corrupt: rank {rank}")
            shape = struct.unpack(f"<{rank}I", take(4 * rank)) if rank else ()
            if version >= 4:
                type_id = u8()
                nbytes = u32()
                if type_id not in _NUMPY_DTYPES:
                    fail(f"corrupt: unknown dtype id {type_id}")
            else:
                item_size = u8()
                if item_size not in _ITEM_SIZE_DTYPES:
                    fail(f"corrupt: unknown item size {item_size}")
                type_id = _ITEM_SIZE_DTYPES[item_size]
                nbytes = u32() * item_size
            dtype = _NUMPY_DTYPES[type_id]
            expected = math.prod(shape) * dtype.itemsize
            if nbytes != expected:
                fail(f"corrupt: shape {tuple(shape)} of {_DTYPE_NAMES[type_id]} needs {expected} bytes "
                     f"but the file records {nbytes}")
            if name in variables:
                fail("corrupt: variable name repeated")
            data = take(nbytes)
            variables[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
            dtypes[name] = _DTYPE_NAMES[type_id]
        aliases: dict[str, str] = {}
        if version >= 3:
            where = "the alias count"
            n_aliases = u32()
            for i in range(n_aliases):
                where = f"alias {i}"
                alias = string()
                target = string()
                if target not in variables:
                    fail(f"corrupt: alias {alias!r} points at {target!r}, which is not a variable")
                if alias in variables or alias in aliases:
                    fail(f"corrupt: alias {alias!r} repeats a name")
                aliases[alias] = target
        if r.remaining:
            where = "the end of the file"
            fail(f"corrupt: {r.remaining} unexpected bytes after the last alias")
    return Ct2File(version, spec_name, revision, variables, dtypes, aliases, source)


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


# ----------------------------------------------------------------------------------- writing


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
    if dtype not in (None, "float32", "float16", "bfloat16", "int8", "int16"):
        raise ValueError(f"unsupported dtype {dtype!r}")
    records: dict[str, tuple[np.ndarray, int]] = {}

    def add(name, value, type_id):
        if name in records:
            raise ValueError(f"variable {name!r} given twice")
        records[name] = (np.asarray(value, order="C"), type_id)

    for name, value in named_arrays.items():
        value = np.asarray(value)
        is_float = value.dtype.kind == "f"
        if not is_float:
            type_id = {np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
                       np.dtype("bool"): 1}.get(value.dtype)
            if type_id is None:
                raise ValueError(f"{name}: cannot store dtype {value.dtype}")
            add(name, value.astype(_NUMPY_DTYPES[type_id]), type_id)
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

    def wstr(fh, s: str):
        raw = s.encode("utf-8")
        fh.write(struct.pack("<H", len(raw) + 1) + raw + b"\0")

    path = Path(path)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<I", binary_version))
        wstr(fh, spec_name)
        fh.write(struct.pack("<I", spec_revision))
        fh.write(struct.pack("<I", len(records)))
        for name in sorted(records):
            value, type_id = records[name]
            wstr(fh, name)
            fh.write(struct.pack("<B", value.ndim))
            fh.write(struct.pack(f"<{value.ndim}I", *value.shape))
            fh.write(struct.pack("<BI", type_id, value.nbytes))
            fh.write(value.astype(_NUMPY_DTYPES[type_id], copy=False).tobytes())
        aliases = dict(aliases or {})
        fh.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            wstr(fh, alias)
            wstr(fh, target)
    return path
