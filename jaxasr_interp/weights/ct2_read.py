"""The binary reader of CTranslate2 ``model.bin`` files (layout in :mod:`.ct2_file`).

:func:`read_ct2` returns the raw :class:`~.ct2_format.Ct2File`; every truncation or
inconsistency is a :class:`CheckpointError` naming the file, the byte offset and what was
being read.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from jaxasr_interp.weights.ct2_format import (
    CURRENT_BINARY_VERSION, DTYPE_NAMES, ITEM_SIZE_DTYPES, MAX_RANK, NUMPY_DTYPES, Ct2File)
from jaxasr_interp.weights.layout import CheckpointError


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


class _FieldReader:
    """Little-endian fields of a :class:`_PartsReader`; errors name ``source``, the byte offset
    and ``where`` (what is being read, updated by the caller)."""

    def __init__(self, parts: _PartsReader, source: str):
        self.parts = parts
        self.source = source
        self.where = "the header"

    def fail(self, what: str):
        raise CheckpointError(f"{self.source}: {what} (at byte {self.parts.pos} while reading {self.where})")

    def take(self, n: int) -> bytes:
        r = self.parts
        if n > r.remaining:
            self.fail(f"truncated: {n} bytes needed but only {r.remaining} left")
        data = r.read(n)
        if len(data) != n:  # the file changed under us
            self.fail(f"truncated: {n} bytes needed but only {len(data)} read")
        return data

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        n = self.u16()
        if n == 0:
            self.fail("corrupt: a string of length 0 (the length counts a trailing NUL)")
        raw = self.take(n)
        if raw[-1] != 0:
            self.fail(f"corrupt: a string of length {n} does not end with NUL")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            self.fail("corrupt: a string is not valid UTF-8")


def _as_paths(path_or_parts) -> list[Path]:
    if isinstance(path_or_parts, (str, os.PathLike)):
        return [Path(path_or_parts)]
    paths = [Path(p) for p in path_or_parts]
    if not paths:
        raise CheckpointError("read_ct2 needs at least one file")
    return paths


def _describe(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else " + ".join(str(p) for p in paths)


def _read_header(f: _FieldReader) -> tuple[int, str, int]:
    """``(binary_version, spec_name, spec_revision)``."""
    version = f.u32()
    if not 1 <= version <= CURRENT_BINARY_VERSION:
        f.fail(f"not a CTranslate2 model.bin, or an unsupported binary version {version} "
               f"(this reader knows versions 1 to {CURRENT_BINARY_VERSION})")
    spec_name, revision = ("", 1)
    if version >= 2:
        spec_name = f.string()
        revision = f.u32()
    return version, spec_name, revision


def _read_type(f: _FieldReader, version: int) -> tuple[int, int]:
    """A variable's ``(dtype id, byte count)``, from its dtype id (binary_version >= 4) or its
    item size."""
    if version >= 4:
        type_id = f.u8()
        nbytes = f.u32()
        if type_id not in NUMPY_DTYPES:
            f.fail(f"corrupt: unknown dtype id {type_id}")
    else:
        item_size = f.u8()
        if item_size not in ITEM_SIZE_DTYPES:
            f.fail(f"corrupt: unknown item size {item_size}")
        type_id = ITEM_SIZE_DTYPES[item_size]
        nbytes = f.u32() * item_size
    return type_id, nbytes


def _read_variable(f: _FieldReader, version: int, i: int,
                   seen: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray, str]:
    """Variable ``i``: ``(name, value, CTranslate2 dtype name)``; ``seen`` are the earlier ones."""
    f.where = f"variable {i}"
    name = f.string()
    f.where = f"variable {i} {name!r}"
    rank = f.u8()
    if rank > MAX_RANK:
        f.fail(f"corrupt: rank {rank}")
    shape = struct.unpack(f"<{rank}I", f.take(4 * rank)) if rank else ()
    type_id, nbytes = _read_type(f, version)
    dtype = NUMPY_DTYPES[type_id]
    expected = math.prod(shape) * dtype.itemsize
    if nbytes != expected:
        f.fail(f"corrupt: shape {tuple(shape)} of {DTYPE_NAMES[type_id]} needs {expected} bytes "
               f"but the file records {nbytes}")
    if name in seen:
        f.fail("corrupt: variable name repeated")
    data = f.take(nbytes)
    return name, np.frombuffer(data, dtype=dtype).reshape(shape), DTYPE_NAMES[type_id]


def _read_aliases(f: _FieldReader, version: int, variables: Mapping[str, np.ndarray]) -> dict[str, str]:
    """The ``alias -> target`` table (binary_version >= 3; none before)."""
    aliases: dict[str, str] = {}
    if version >= 3:
        f.where = "the alias count"
        n_aliases = f.u32()
        for i in range(n_aliases):
            f.where = f"alias {i}"
            alias = f.string()
            target = f.string()
            if target not in variables:
                f.fail(f"corrupt: alias {alias!r} points at {target!r}, which is not a variable")
            if alias in variables or alias in aliases:
                f.fail(f"corrupt: alias {alias!r} repeats a name")
            aliases[alias] = target
    return aliases


def read_ct2(path_or_parts: str | os.PathLike | Sequence[str | os.PathLike]) -> Ct2File:
    """Parse a CTranslate2 ``model.bin``, or its split parts read in order as one stream.

    Any truncation or inconsistency raises :class:`CheckpointError` naming the file and the
    variable being read.
    """
    paths = _as_paths(path_or_parts)
    source = _describe(paths)
    with _PartsReader(paths) as r:
        if r.total == 0:
            raise CheckpointError(f"{source}: empty file, not a CTranslate2 model.bin")
        f = _FieldReader(r, source)
        version, spec_name, revision = _read_header(f)
        n_vars = f.u32()
        variables: dict[str, np.ndarray] = {}
        dtypes: dict[str, str] = {}
        for i in range(n_vars):
            name, value, dtype_name = _read_variable(f, version, i, variables)
            variables[name] = value
            dtypes[name] = dtype_name
        aliases = _read_aliases(f, version, variables)
        if r.remaining:
            f.where = "the end of the file"
            f.fail(f"corrupt: {r.remaining} unexpected bytes after the last alias")
    return Ct2File(version, spec_name, revision, variables, dtypes, aliases, source)
