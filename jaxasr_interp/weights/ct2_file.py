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

This module gathers the format's public names; the code is split by concern:
:mod:`.ct2_format` (dtype ids, :class:`Ct2File`), :mod:`.ct2_read` (the parser),
:mod:`.ct2_decode` (float32 decoding and dequantization), :mod:`.ct2_write` (the writer).
The Whisper mapping onto our parameters is :mod:`.ct2`.
"""

from __future__ import annotations

from jaxasr_interp.weights.ct2_decode import decoded_variables
from jaxasr_interp.weights.ct2_format import CURRENT_BINARY_VERSION, Ct2File
from jaxasr_interp.weights.ct2_read import read_ct2
from jaxasr_interp.weights.ct2_write import write_ct2

__all__ = ["CURRENT_BINARY_VERSION", "Ct2File", "decoded_variables", "read_ct2", "write_ct2"]
