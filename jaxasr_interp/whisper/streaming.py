"""Stream audio inputs batch by batch, so that host memory stays flat in the number of inputs.

Batched jobs over many files (:func:`.api.transcribe_ids`, :func:`.lenses.encoder.encoder_lens`)
never hold every waveform or every mel at once: :func:`loaded_batches` yields the inputs of one
batch at a time, loaded (files decoded to 16 kHz waveforms), and the caller turns them into
mels, runs the batch and drops them before the next. While the caller works on a batch, one
background thread loads the next one (file decoding is host work that would otherwise leave the
device idle between batches). Only loading runs on that thread, one batch ahead, and batches
come back in input order: results are those of loading everything first, and at most two
batches of waveforms are alive at a time.

:func:`check_files` fails up front on a path that does not exist (or is a directory), so a long job does not stop
at its thousandth batch for a typo.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Sequence

from jaxasr_interp.whisper.audio import check_audio_path, load_audio


def check_files(items: Sequence) -> None:
    """Fail on the first path item that does not exist or is a directory (the checks of
    :func:`.audio.check_audio_path`, before any batch runs); arrays pass."""
    for x in items:
        if isinstance(x, (str, Path)):
            check_audio_path(x)


def loaded_batches(items: Sequence, batch_size: int, load: Callable = load_audio, *,
                   prefetch: bool = True) -> Iterator[list]:
    """Yield ``[load(x) for x in batch]`` for consecutive batches of ``batch_size`` items, in
    order. With ``prefetch`` the next batch is loaded on one background thread meanwhile."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    starts = range(0, len(items), batch_size)
    load_batch = lambda start: [load(x) for x in items[start:start + batch_size]]
    if not prefetch:
        yield from map(load_batch, starts)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jai-audio")
    try:
        pending = pool.submit(load_batch, 0) if starts else None
        for start in starts:
            batch, pending = pending.result(), None  # a load error surfaces here, in order
            if start + batch_size < len(items):
                pending = pool.submit(load_batch, start + batch_size)
            yield batch
            del batch  # not kept alive here while the next batch is awaited
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # an abandoned loop: no thread left behind
