"""Checkpointed stages of the long experiments, on the one resumable mechanism
(:mod:`jaxasr_interp.core.resumable`).

An experiment's model-heavy steps are *stages* (transcribe the candidates, sweep each item,
check the best patches...), each a resumable job with one chunk per item: a batch of
utterances to transcribe, one looping utterance's sweep, one sentence's sweep.
``Work(directory, config, what=...)`` is the work directory of one run: its ``sweep.json``
records the whole configuration (model, a digest of the inputs, every setting, dtype,
precision); each stage is a sub-directory (``transcripts/``, ``sweeps/``, ...) of
``chunk_NNNNN.npz`` files, each written whole as soon as its item is done.

Rerun with the same directory and the same configuration and every finished item is read back
instead of computed (a run killed at any point, SIGKILL included, resumes); another
configuration is a one-line error naming the settings that differ. ``Work(None, ...)`` runs
the same stages in memory. Either way every chunk's result goes through numpy arrays (npz
keeps them bit for bit, text included; bfloat16 is widened to float32, exactly), so a resumed
run, an uninterrupted one and one without a work directory give identical results.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import as_precision, compute_dtype
from jaxasr_interp.core.resumable import claim, load_chunks, resumable_run


class Work:
    """The work directory of one experiment run (None: the stages run in memory)."""

    def __init__(self, directory, config: dict, *, what: str):
        self.what = what
        # the run's own chunks are its stages' (in sub-directories): 0 here
        self.directory = None if directory is None else claim(directory, config, 0, what=what)

    def map(self, stage: str, fn: Callable[[Any], dict], chunks: Sequence, *, key: Any = None) -> list[dict]:
        """``[fn(c) for c in chunks]`` (each a flat dict of arrays), saved item by item in the
        stage's sub-directory and read back from there; ``key``: what else this stage depends
        on (results of earlier stages)."""
        if self.directory is None:
            from tqdm import tqdm
            return [_savable(fn(c)) for c in tqdm(chunks, desc=f"{self.what}: {stage}", unit="chunk")]
        path = self.directory / stage
        resumable_run(lambda c: _savable(fn(c)), chunks, path, key=dict(stage=stage, depends_on=key), store="npz",
                      desc=f"{self.what}: {stage}", what=f"{self.what} stage")
        return load_chunks(path, "npz", what=f"{self.what} stage")


def _savable(result: dict) -> dict:
    """numpy arrays; bfloat16 ones widened to float32 (exact), which npz stores as numbers."""
    def one(a):
        a = np.asarray(a)
        return a.astype(np.float32) if a.dtype == jnp.bfloat16 else a
    return jax.tree_util.tree_map(one, result)


def numerics(model, dtype, precision) -> dict:
    """``dict(dtype=..., precision=...)`` for every model call of an experiment: ``dtype``
    ("float32" / "bfloat16" / a JAX dtype; None: the parameters' own) resolved once, so each
    call gets the same value and the configuration records it."""
    return dict(dtype=compute_dtype(dtype, model.params), precision=as_precision(precision))


def describe(model, numerics_: dict) -> dict:
    """The model part of an experiment's configuration."""
    return dict(model=model.source, dims=dataclasses.asdict(model.dims),
                dtype=np.dtype(numerics_["dtype"]).name, precision=numerics_["precision"])


def digest(arrays) -> str:
    """SHA-256 of a sequence of arrays (shapes, dtypes and bytes): the inputs in a configuration."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def transcribe(work: Work, stage: str, model, audios: list, *, max_new_tokens: int, batch_size: int = 8,
               **numerics_) -> list[list[int]]:
    """Greedy ids of each waveform, as ``transcribe_ids(model, audios, batch_size=...)`` gives
    them (the same batches, each a chunk of ``stage``)."""
    from jaxasr_interp.whisper.api import transcribe_ids

    def one(batch):
        ids = transcribe_ids(model, batch, batch_size=batch_size, max_new_tokens=max_new_tokens, **numerics_)
        return dict(ids=pad_rows(ids))

    batches = [audios[i:i + batch_size] for i in range(0, len(audios), batch_size)]
    return [unpad_row(row) for part in work.map(stage, one, batches) for row in part["ids"]]


def pad_rows(rows: list) -> np.ndarray:
    """Token id rows of different lengths -> one int64 array, -1 after each row's end."""
    out = np.full((len(rows), max(map(len, rows), default=0)), -1, np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def unpad_row(row: np.ndarray) -> list[int]:
    return [int(t) for t in row if t >= 0]


def as_texts(array) -> list[str]:
    """A saved array of strings -> a list of Python strings."""
    return [str(t) for t in np.asarray(array).tolist()]
