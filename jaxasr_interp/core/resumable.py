"""Resumable work: run a job chunk by chunk, each finished chunk saved whole, so that a killed
run resumes where it stopped. Every resumable job in the library (patching sweeps, probe
feature extraction) goes through this one mechanism.

``resumable_run(fn, chunks, directory, key=...)`` calls ``fn(chunk)`` for every chunk whose
result is not on disk yet and saves each result as soon as it is computed, as
``directory/chunk_NNNNN``; memory holds one chunk. ``resumable_map`` is the same run followed
by reading every result back: ``[fn(c) for c in chunks]``. A chunk is written whole or not at
all (a temporary name, then a rename), so a process killed at any point (SIGKILL included)
leaves only whole chunks behind; a rerun with the same ``key`` skips them and computes the
rest. Results are identical to an uninterrupted run because each chunk is computed by the same
function from the same inputs.

``key`` names the job (model, inputs, settings: any JSON-able value). It is stored with the
number of chunks in ``directory/sweep.json`` (:func:`read_manifest`); a directory holding
another job is an error, never silently mixed.

Two chunk formats (``store``): ``"orbax"`` (default; any pytree of arrays, a directory
``chunk_NNNNN`` written by orbax) and ``"npz"`` (a flat dict of numpy arrays, text arrays
included, one file ``chunk_NNNNN.npz``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

MANIFEST = "sweep.json"
STORES = ("orbax", "npz")


class _Npz:
    """Flat dicts of numpy arrays, one ``.npz`` file per chunk."""

    suffix = ".npz"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def save(self, path: Path, result) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **result)
        os.replace(tmp, path)  # a chunk is on disk whole or not at all

    def load(self, path: Path) -> dict:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}


class _Orbax:
    """Pytrees of arrays, one orbax checkpoint directory per chunk (orbax writes into a
    temporary directory and renames it when complete)."""

    suffix = ""

    def __enter__(self):
        import orbax.checkpoint as ocp
        self.ckptr = ocp.StandardCheckpointer().__enter__()
        return self

    def __exit__(self, *exc):
        return self.ckptr.__exit__(*exc)

    def save(self, path: Path, result) -> None:
        self.ckptr.save(path, result)
        self.ckptr.wait_until_finished()

    def load(self, path: Path):
        return jax.tree_util.tree_map(np.asarray, self.ckptr.restore(path))


def _store(store: str):
    if store not in STORES:
        raise ValueError(f"store must be one of {STORES}, got {store!r}")
    return _Npz() if store == "npz" else _Orbax()


def chunk_path(directory, i: int, store: str = "orbax") -> Path:
    return Path(directory) / f"chunk_{i:05d}{_store(store).suffix}"


def _differences(found, key) -> str:
    if isinstance(found, dict) and isinstance(key, dict):
        return "differs in " + ", ".join(sorted(k for k in set(found) | set(key) if found.get(k) != key.get(k)))
    return f"holds key {found!r}"


def claim(directory, key: Any, n_chunks: int, *, what: str = "sweep") -> Path:
    """Write the manifest of a new job, or check that ``directory`` holds this job."""
    directory = Path(directory).expanduser().absolute()
    manifest = json.loads(json.dumps({"key": key, "n_chunks": n_chunks}))
    path = directory / MANIFEST
    if path.exists():
        found = json.loads(path.read_text())
        if found != manifest:
            why = (_differences(found["key"], manifest["key"]) if found["key"] != manifest["key"]
                   else f"{found['n_chunks']} chunks, not {n_chunks}")
            raise ValueError(f"{directory} holds another {what} ({why}); use a new directory or delete it")
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)
    return directory


def read_manifest(directory, *, what: str = "sweep") -> dict:
    """``{"key": ..., "n_chunks": ...}`` of the job in ``directory``."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no {what} in {directory} ({MANIFEST} missing)")
    return json.loads(path.read_text())


def finished_chunks(directory, store: str = "orbax") -> list[int]:
    """Indices of the chunks whose results are complete on disk."""
    suffix, done = _store(store).suffix, []
    for path in sorted(Path(directory).glob("chunk_*")):
        stem = path.name[6: len(path.name) - len(suffix)] if path.name.endswith(suffix) else ""
        # orbax's temporary directories and the npz temporary files have other suffixes
        if stem.isdigit() and path.is_dir() == (store == "orbax"):
            done.append(int(stem))
    return done


def _progress(indices, desc: str, done: int, total: int):
    from tqdm import tqdm
    return tqdm(indices, desc=desc, unit="chunk", initial=done, total=total)


def resumable_run(fn: Callable[[Any], Any], chunks: Sequence[Any], directory, *, key: Any,
                  store: str = "orbax", limit: int | None = None, progress: bool = True,
                  desc: str = "sweep", what: str = "sweep",
                  on_computed: Callable[[int], None] | None = None) -> list[int]:
    """Compute and save ``fn(chunk)`` for every chunk not yet on disk (at most ``limit`` of
    them: a time box, a rerun continues) -> the indices computed by this call."""
    directory = claim(directory, key, len(chunks), what=what)
    done = set(finished_chunks(directory, store))
    todo = [i for i in range(len(chunks)) if i not in done][:limit]
    computed = []
    with _store(store) as saver:
        for i in _progress(todo, desc, len(done), len(chunks)) if progress else todo:
            result = jax.tree_util.tree_map(np.asarray, fn(chunks[i]))
            saver.save(chunk_path(directory, i, store), result)
            computed.append(i)
            if on_computed is not None:
                on_computed(i)
    return computed


def load_chunks(directory, store: str = "orbax", *, what: str = "sweep") -> list:
    """Every chunk's result of a finished job, in order; an unfinished one is an error."""
    directory = Path(directory).expanduser().absolute()
    n_chunks = read_manifest(directory, what=what)["n_chunks"]
    missing = sorted(set(range(n_chunks)) - set(finished_chunks(directory, store)))
    if missing:
        raise ValueError(f"{directory} is an incomplete {what} ({len(missing)} of {n_chunks} chunks "
                         "missing); rerun it to resume")
    with _store(store) as loader:
        return [loader.load(chunk_path(directory, i, store)) for i in range(n_chunks)]


def resumable_map(fn: Callable[[Any], Any], chunks: Sequence[Any], directory, *, key: Any,
                  store: str = "orbax", progress: bool = True,
                  on_computed: Callable[[int], None] | None = None) -> list:
    """``[fn(c) for c in chunks]``, each result saved as soon as computed and restored on rerun."""
    resumable_run(fn, chunks, directory, key=key, store=store, progress=progress, on_computed=on_computed)
    return load_chunks(directory, store)
