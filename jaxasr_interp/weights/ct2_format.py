"""CTranslate2 ``model.bin``: the format's constants and :class:`Ct2File`, its raw content.

The layout is described in :mod:`.ct2_file`; it is parsed by :mod:`.ct2_read`, decoded to
float32 by :mod:`.ct2_decode` and written by :mod:`.ct2_write`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CURRENT_BINARY_VERSION = 6

# Order matches the DataType enum of include/ctranslate2/types.h.
DTYPE_NAMES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
NUMPY_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
                 4: np.dtype("<f2"), 5: np.dtype("<u2")}  # bf16 is kept as raw uint16 bits
ITEM_SIZE_DTYPES = {4: 0, 2: 2, 1: 1}  # binary_version < 4: the dtype was guessed from the item size
MAX_RANK = 8


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
