"""CTranslate2 ``model.bin`` (faster-whisper's format): a reader, a minimal writer, the mapping.

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

Whisper variable names (``WhisperSpec`` revision 3, read from the bundled files)::

    encoder/conv{1,2}/{weight [out, in, 3], bias}
    encoder/position_encodings/encodings [n_audio_ctx, d]      (openai's sinusoids)
    encoder/layer_N/self_attention/layer_norm/{gamma, beta}
    encoder/layer_N/self_attention/linear_0/{weight [3d, d], bias [3d]}   fused rows [q; k; v]
    encoder/layer_N/self_attention/linear_1/{weight, bias}                out
    encoder/layer_N/ffn/layer_norm/{gamma, beta}, ffn/linear_0 (fc1), ffn/linear_1 (fc2)
    encoder/layer_norm/{gamma, beta}, encoder/num_heads (int16 scalar)
    decoder/embeddings/weight [n_vocab, d]
    decoder/position_encodings/encodings [n_text_ctx, d]       (learned)
    decoder/layer_N/self_attention/...     as in the encoder
    decoder/layer_N/attention/layer_norm   cross-attention; linear_0 = q, linear_1 = [k; v],
                                           linear_2 = out
    decoder/layer_N/ffn/...
    decoder/layer_norm/{gamma, beta}
    decoder/{num_heads, activation, pre_norm, scale_embeddings, alibi, alignment_layer,
             alignment_heads, start_from_zero_embedding}   scalars
    alias decoder/projection/weight -> decoder/embeddings/weight

Whisper's key projections have no bias; CTranslate2 fuses them with zeros, which are checked
to be exactly zero and consumed. Linear weights are ``[out, in]`` and convs
``[out, in, width]``, transposed here into the Flax layout of :mod:`.layout`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import struct
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..config import WHISPER_HEAD_DIM, Dims
from .layout import CheckpointError, ParamFiller, TensorSource, iter_paths

CURRENT_BINARY_VERSION = 6
# Order matches the DataType enum of include/ctranslate2/types.h.
_DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_NUMPY_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                 4: np.dtype("<f2"), 5: np.dtype("<u2")}  # bf16 is kept as raw uint16 bits
_ITEM_SIZE_DTYPES = {4: 0, 2: 2, 1: 1}  # binary_version < 4: the dtype was guessed from the item size
_MAX_RANK = 8

# Every released Whisper model has 1500 encoder positions. Only used when a file carries no
# encoder position encodings (CTranslate2's WhisperSpec always writes them) so that their
# number cannot be read from the weights.
WHISPER_N_AUDIO_CTX = 1500


def sinusoids(length: int, channels: int, max_timescale: float = 10000) -> np.ndarray:
    """openai/whisper's ``sinusoids``: the encoder's fixed position embedding, in float32."""
    if channels % 2:
        raise ValueError(f"sinusoids need an even number of channels, got {channels}")
    log_timescale_increment = np.float32(np.log(max_timescale) / (channels // 2 - 1))
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2, dtype=np.float32))
    scaled_time = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1).astype(np.float32)


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


# ----------------------------------------------------------------------------------- mapping

# Scalars of WhisperSpec / TransformerDecoderSpec. Each one is read, and either used (heads)
# or checked against the value that Whisper's architecture needs: a file whose flags describe
# another architecture is refused rather than silently run as Whisper.
_GELU = 3  # common_spec.Activation.GELU
_REQUIRED_FLAGS = {
    "decoder/activation": _GELU,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/alibi": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Flags that only matter when alibi is on, and the default alignment-head selection (the
# alignment heads of Whisper are in config.json): read and skipped by name.
_IGNORED_SCALARS = ("decoder/alibi_use_positive_positions", "decoder/scale_alibi",
                    "decoder/alignment_layer", "decoder/alignment_heads")
# A per-linear compute hint written by newer CTranslate2 versions.
_IGNORED_SCALAR_SUFFIXES = ("/keep_in_float32",)

_LAYER_RE = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


def _scalar(tensors: TensorSource, name: str) -> int | None:
    if name not in tensors:
        return None
    value = tensors.take(name)
    if value.ndim != 0:
        raise CheckpointError(f"{tensors.source}: {name!r} should be a scalar, got shape {value.shape}")
    return int(value)


def _split_rows(tensors: TensorSource, name: str, d: int, parts: int) -> list[np.ndarray]:
    value = tensors.take(name)
    want = (parts * d,) + ((d,) if name.endswith("weight") else ())
    if value.shape != want:
        raise CheckpointError(f"{tensors.source}: tensor {name!r} has shape {value.shape}, expected {want} "
                              f"({parts} fused projections of width {d})")
    return [value[i * d:(i + 1) * d] for i in range(parts)]


def _check_zero(tensors: TensorSource, name: str, key_bias: np.ndarray) -> None:
    if np.any(key_bias != 0):
        raise CheckpointError(f"{tensors.source}: tensor {name!r} has a nonzero key bias "
                              f"(max |b| = {float(np.max(np.abs(key_bias))):.3g}); Whisper's key "
                              "projection has no bias, so this is not a Whisper checkpoint")


def _count_layers(names: Iterable[str], stack: str) -> int:
    idx = [int(m.group(2)) for n in names if (m := _LAYER_RE.match(n)) and m.group(1) == stack]
    return max(idx) + 1 if idx else 0


def params_from_ct2_variables(variables: Mapping[str, np.ndarray], source: str = "CTranslate2 model",
                              config: Mapping | None = None) -> tuple[dict, Dims]:
    """Map decoded CTranslate2 variables (see :func:`decoded_variables`) to ``(params, dims)``.

    Dims come from the tensor shapes; head counts from the ``*/num_heads`` scalars, else from
    ``config`` (``encoder_attention_heads``/``decoder_attention_heads``), else Whisper's
    64-dimensional heads.
    """
    tensors = TensorSource(variables, source)
    names = list(variables)
    config = config or {}

    def shape_of(name):
        if name not in variables:
            raise CheckpointError(f"{source}: missing tensor {name!r}")
        return np.shape(variables[name])

    for name, want in _REQUIRED_FLAGS.items():
        got = _scalar(tensors, name)
        if got is not None and got != want:
            raise CheckpointError(f"{source}: {name!r} is {got}, but Whisper needs {want}")
    for name in _IGNORED_SCALARS:
        _scalar(tensors, name)
    for name in names:
        if name.endswith(_IGNORED_SCALAR_SUFFIXES) and np.ndim(variables[name]) == 0:
            tensors.skip(name)

    conv1 = shape_of("encoder/conv1/weight")
    emb = shape_of("decoder/embeddings/weight")
    dec_pos = shape_of("decoder/position_encodings/encodings")
    if len(conv1) != 3 or len(emb) != 2 or len(dec_pos) != 2:
        raise CheckpointError(f"{source}: encoder/conv1/weight {conv1}, decoder/embeddings/weight {emb} or "
                              f"decoder/position_encodings/encodings {dec_pos} has the wrong rank")
    da, dt = conv1[0], emb[1]
    has_enc_pos = "encoder/position_encodings/encodings" in variables
    n_audio_ctx = shape_of("encoder/position_encodings/encodings")[0] if has_enc_pos else WHISPER_N_AUDIO_CTX
    heads = {}
    for stack, d, cfg_key in (("encoder", da, "encoder_attention_heads"), ("decoder", dt, "decoder_attention_heads")):
        n = _scalar(tensors, f"{stack}/num_heads")
        heads[stack] = n or config.get(cfg_key) or max(d // WHISPER_HEAD_DIM, 1)
    try:
        dims = Dims(n_mels=conv1[1], n_audio_ctx=n_audio_ctx, n_audio_state=da, n_audio_head=heads["encoder"],
                    n_audio_layer=_count_layers(names, "encoder"), n_vocab=emb[0], n_text_ctx=dec_pos[0],
                    n_text_state=dt, n_text_head=heads["decoder"], n_text_layer=_count_layers(names, "decoder"))
    except ValueError as e:
        raise CheckpointError(f"{source}: inconsistent model dimensions: {e}") from None

    filler = ParamFiller(dims, source)

    def put(path, name, kind="id", layer=None):
        value = tensors.take(name)
        origin = name
        if (kind == "linear" and value.ndim == 2) or (kind == "conv" and value.ndim == 3):
            origin = f"{name} (stored as {value.shape}, transposed)"
            value = value.T if kind == "linear" else value.transpose(2, 1, 0)
        filler.put(path, value, layer=layer, origin=origin)

    def put_value(path, value, name, layer=None, kind="id"):
        filler.put(path, value.T if kind == "linear" else value, layer=layer, origin=name)

    def norm(path, prefix, layer=None):
        put(f"{path}/scale", f"{prefix}/gamma", layer=layer)
        put(f"{path}/bias", f"{prefix}/beta", layer=layer)

    def linear(path, prefix, layer=None):
        put(f"{path}/kernel", f"{prefix}/weight", "linear", layer)
        put(f"{path}/bias", f"{prefix}/bias", layer=layer)

    def self_attention(stack, i, d):
        ct, ours = f"{stack}/layer_{i}/self_attention", f"{stack}/blocks/attn"
        norm(f"{stack}/blocks/attn_ln", f"{ct}/layer_norm", i)
        wq, wk, wv = _split_rows(tensors, f"{ct}/linear_0/weight", d, 3)
        bq, bk, bv = _split_rows(tensors, f"{ct}/linear_0/bias", d, 3)
        _check_zero(tensors, f"{ct}/linear_0/bias", bk)
        for proj, w, b in (("query", wq, bq), ("key", wk, None), ("value", wv, bv)):
            put_value(f"{ours}/{proj}/kernel", w, f"{ct}/linear_0/weight", i, "linear")
            if b is not None:
                put_value(f"{ours}/{proj}/bias", b, f"{ct}/linear_0/bias", i)
        linear(f"{ours}/out", f"{ct}/linear_1", i)

    def cross_attention(i, d):
        ct, ours = f"decoder/layer_{i}/attention", "decoder/blocks/cross_attn"
        norm("decoder/blocks/cross_attn_ln", f"{ct}/layer_norm", i)
        linear(f"{ours}/query", f"{ct}/linear_0", i)
        wk, wv = _split_rows(tensors, f"{ct}/linear_1/weight", d, 2)
        bk, bv = _split_rows(tensors, f"{ct}/linear_1/bias", d, 2)
        _check_zero(tensors, f"{ct}/linear_1/bias", bk)
        put_value(f"{ours}/key/kernel", wk, f"{ct}/linear_1/weight", i, "linear")
        put_value(f"{ours}/value/kernel", wv, f"{ct}/linear_1/weight", i, "linear")
        put_value(f"{ours}/value/bias", bv, f"{ct}/linear_1/bias", i)
        linear(f"{ours}/out", f"{ct}/linear_2", i)

    def ffn(stack, i):
        ct = f"{stack}/layer_{i}/ffn"
        norm(f"{stack}/blocks/mlp_ln", f"{ct}/layer_norm", i)
        linear(f"{stack}/blocks/mlp1", f"{ct}/linear_0", i)
        linear(f"{stack}/blocks/mlp2", f"{ct}/linear_1", i)

    for conv in ("conv1", "conv2"):
        put(f"encoder/{conv}/kernel", f"encoder/{conv}/weight", "conv")
        put(f"encoder/{conv}/bias", f"encoder/{conv}/bias")
    if has_enc_pos:
        put("encoder/positional_embedding", "encoder/position_encodings/encodings")
    else:
        # CTranslate2 files carry the encoder's sinusoidal encodings; should one not, they are
        # the fixed function openai/whisper computes, not learned weights, so recompute them.
        filler.put("encoder/positional_embedding", sinusoids(n_audio_ctx, da), origin="sinusoids()")
    norm("encoder/ln_post", "encoder/layer_norm")
    for i in range(dims.n_audio_layer):
        self_attention("encoder", i, da)
        ffn("encoder", i)

    put("decoder/token_embedding", "decoder/embeddings/weight")
    put("decoder/positional_embedding", "decoder/position_encodings/encodings")
    norm("decoder/ln", "decoder/layer_norm")
    for i in range(dims.n_text_layer):
        self_attention("decoder", i, dt)
        cross_attention(i, dt)
        ffn("decoder", i)

    # The output projection is tied to the token embedding: an alias in CTranslate2 files.
    if "decoder/projection/weight" in tensors:
        proj = tensors.take("decoder/projection/weight")
        if not np.array_equal(proj, variables["decoder/embeddings/weight"]):
            raise CheckpointError(f"{source}: decoder/projection/weight differs from the token embedding; "
                                  "Whisper ties them and so does this library")
    if "decoder/projection/bias" in tensors:
        _check_zero(tensors, "decoder/projection/bias", tensors.take("decoder/projection/bias"))

    tensors.check_all_taken()
    return filler.finish(), dims


def read_ct2_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` beside a ``model.bin`` (alignment heads, suppress ids ...), or {}."""
    import json
    cfg = Path(directory) / "config.json"
    if not cfg.is_file():
        return {}
    try:
        return json.loads(cfg.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{cfg}: unreadable CTranslate2 config.json ({e})") from None


def load_ct2(path_or_parts: str | os.PathLike | Sequence[str | os.PathLike],
             config: Mapping | None = None) -> tuple[dict, Dims]:
    """Read a CTranslate2 Whisper ``model.bin`` (or its parts, in order) into ``(params, dims)``."""
    ct2 = read_ct2(path_or_parts)
    if ct2.spec_name and ct2.spec_name != "WhisperSpec":
        raise CheckpointError(f"{ct2.source}: a CTranslate2 {ct2.spec_name}, not a WhisperSpec model")
    return params_from_ct2_variables(decoded_variables(ct2), ct2.source, config)


def ct2_variables_from_params(params: Mapping, dims: Dims) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The inverse mapping: float32 CTranslate2 variables (scalars as int8/int16) and aliases,
    as the CTranslate2 Whisper converter writes them. For tests and :func:`write_ct2`."""
    flat = {k: np.asarray(v, np.float32) for k, v in iter_paths(params)}
    out: dict[str, np.ndarray] = {
        "decoder/activation": np.int8(_GELU), "decoder/alibi": np.int8(0),
        "decoder/alignment_heads": np.int16(1), "decoder/alignment_layer": np.int16(-1),
        "decoder/num_heads": np.int16(dims.n_text_head), "decoder/pre_norm": np.int8(1),
        "decoder/scale_embeddings": np.int8(0), "decoder/start_from_zero_embedding": np.int8(0),
        "encoder/num_heads": np.int16(dims.n_audio_head),
        "decoder/embeddings/weight": flat["decoder/token_embedding"],
        "decoder/position_encodings/encodings": flat["decoder/positional_embedding"],
        "encoder/position_encodings/encodings": flat["encoder/positional_embedding"],
    }
    for stack, ln in (("encoder", "ln_post"), ("decoder", "ln")):
        out[f"{stack}/layer_norm/gamma"] = flat[f"{stack}/{ln}/scale"]
        out[f"{stack}/layer_norm/beta"] = flat[f"{stack}/{ln}/bias"]
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"] = flat[f"encoder/{conv}/kernel"].transpose(2, 1, 0)
        out[f"encoder/{conv}/bias"] = flat[f"encoder/{conv}/bias"]

    def blk(stack, name, i):
        return flat[f"{stack}/blocks/{name}"][i]

    for stack, n in (("encoder", dims.n_audio_layer), ("decoder", dims.n_text_layer)):
        for i in range(n):
            pre = f"{stack}/layer_{i}"
            pairs = [("self_attention", "attn_ln"), ("ffn", "mlp_ln")]
            if stack == "decoder":
                pairs.append(("attention", "cross_attn_ln"))
            for ct, ours in pairs:
                out[f"{pre}/{ct}/layer_norm/gamma"] = blk(stack, f"{ours}/scale", i)
                out[f"{pre}/{ct}/layer_norm/beta"] = blk(stack, f"{ours}/bias", i)
            a = "attn"
            zeros = np.zeros_like(blk(stack, f"{a}/query/bias", i))
            out[f"{pre}/self_attention/linear_0/weight"] = np.concatenate(
                [blk(stack, f"{a}/{p}/kernel", i).T for p in ("query", "key", "value")])
            out[f"{pre}/self_attention/linear_0/bias"] = np.concatenate(
                [blk(stack, f"{a}/query/bias", i), zeros, blk(stack, f"{a}/value/bias", i)])
            out[f"{pre}/self_attention/linear_1/weight"] = blk(stack, f"{a}/out/kernel", i).T
            out[f"{pre}/self_attention/linear_1/bias"] = blk(stack, f"{a}/out/bias", i)
            for j, mlp in enumerate(("mlp1", "mlp2")):
                out[f"{pre}/ffn/linear_{j}/weight"] = blk(stack, f"{mlp}/kernel", i).T
                out[f"{pre}/ffn/linear_{j}/bias"] = blk(stack, f"{mlp}/bias", i)
            if stack == "decoder":
                c = "cross_attn"
                out[f"{pre}/attention/linear_0/weight"] = blk(stack, f"{c}/query/kernel", i).T
                out[f"{pre}/attention/linear_0/bias"] = blk(stack, f"{c}/query/bias", i)
                out[f"{pre}/attention/linear_1/weight"] = np.concatenate(
                    [blk(stack, f"{c}/key/kernel", i).T, blk(stack, f"{c}/value/kernel", i).T])
                out[f"{pre}/attention/linear_1/bias"] = np.concatenate([zeros, blk(stack, f"{c}/value/bias", i)])
                out[f"{pre}/attention/linear_2/weight"] = blk(stack, f"{c}/out/kernel", i).T
                out[f"{pre}/attention/linear_2/bias"] = blk(stack, f"{c}/out/bias", i)
    out = {k: np.asarray(v, order="C") for k, v in out.items()}
    return out, {"decoder/projection/weight": "decoder/embeddings/weight"}
