"""Resumable sweeps: run a sweep chunk by chunk, each finished chunk saved with orbax.

``resumable_map(fn, chunks, directory, key=...)`` calls ``fn(chunk)`` for every chunk (a pytree
of arrays) and returns the list of results (pytrees of arrays). Each result is written with
orbax as ``directory/chunk_NNNNN`` as soon as it is computed; orbax writes into a temporary
directory and renames it when complete, so a process killed at any point (SIGKILL included)
leaves only whole chunks behind. A rerun with the same ``key`` restores the finished chunks
without recomputing them and computes the rest; results are identical to an uninterrupted run
because each chunk is computed by the same function from the same inputs.

``key`` names the sweep (model, inputs, settings: any JSON-able value). It is stored in
``directory/sweep.json``; a directory holding another sweep is an error, never silently mixed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np

MANIFEST = "sweep.json"


def _chunk_dir(directory: Path, i: int) -> Path:
    return directory / f"chunk_{i:05d}"


def _claim(directory: Path, key: Any, n_chunks: int) -> None:
    manifest = {"key": key, "n_chunks": n_chunks}
    path = directory / MANIFEST
    if path.exists():
        found = json.loads(path.read_text())
        if found != json.loads(json.dumps(manifest)):
            raise ValueError(f"{directory} holds another sweep ({found['key']!r}, {found['n_chunks']} "
                             f"chunks); use a new directory or delete it")
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def finished_chunks(directory: str | os.PathLike) -> list[int]:
    """Indices of the chunks whose results are complete on disk."""
    directory = Path(directory)
    done = []
    for path in sorted(directory.glob("chunk_*")):
        if path.is_dir() and path.name[6:].isdigit():  # orbax's temporary dirs have suffixes
            done.append(int(path.name[6:]))
    return done


def resumable_map(fn: Callable[[Any], Any], chunks: Sequence[Any], directory: str | os.PathLike, *,
                  key: Any, progress: bool = True, on_computed: Callable[[int], None] | None = None) -> list:
    """``[fn(c) for c in chunks]``, each result saved as soon as computed and restored on rerun."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    _claim(directory, key, len(chunks))
    done = set(finished_chunks(directory))
    indices = range(len(chunks))
    if progress:
        from tqdm import tqdm
        indices = tqdm(indices, desc="sweep", unit="chunk", initial=0)
    results = []
    with ocp.StandardCheckpointer() as ckptr:
        for i in indices:
            path = _chunk_dir(directory, i)
            if i in done:
                results.append(jax.tree_util.tree_map(np.asarray, ckptr.restore(path)))
                continue
            result = jax.tree_util.tree_map(np.asarray, fn(chunks[i]))
            ckptr.save(path, result)
            ckptr.wait_until_finished()
            if on_computed is not None:
                on_computed(i)
            results.append(result)
    return results
