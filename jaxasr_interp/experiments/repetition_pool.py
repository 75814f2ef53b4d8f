"""The candidates of the repetition experiment, and which of them loop.

Pool (:func:`candidate_pool`, deterministic for a seed): long stretches of real speech (the
bundled LibriVox/JFK clips and, when installed, the pocketsphinx test "cards" clips,
concatenated in seeded random orders to about 24 s, so that the decoder must write ~80 tokens)
under pink noise at -5 dB SNR, white noise at -5 dB, and pink noise at -8 dB. Measured: tiny.en
never loops on the single short clips, clean, noisy, truncated or clipped (tried while building
this); long noisy windows are what make it loop, and the noise level is the documented knob
that induces more loops. Or the user's own files (:func:`items_from_audio`): each one's first
30 s, with no reference text; the ones that do not loop are listed as ``no_loop``.

Each item is transcribed greedily (plain argmax, ``max_new_tokens`` tokens; a checkpointed
stage, :mod:`.stages`, one chunk per batch). It *loops* when
:func:`.patching_decode.has_repetition` holds for the transcript and not for the item's
reference text.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxasr_interp.experiments.stages import Work, transcribe
from jaxasr_interp.patching.decoding import has_repetition, ids_to_text
from jaxasr_interp.patching.reference import white_noise
from jaxasr_interp.whisper.audio import SAMPLE_RATE

CARDS = Path("/usr/share/pocketsphinx/test/data/cards")


def _real_clips() -> list[tuple[np.ndarray, str, str]]:
    from jaxasr_interp.whisper.audio import load_audio, sample_path, sample_transcripts
    clips = [(load_audio(sample_path(n)), t, n) for n, t in sample_transcripts().items()]
    if (CARDS / "cards.transcription").is_file():
        for line in (CARDS / "cards.transcription").read_text().splitlines():
            text, ident = line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)
            path = CARDS / f"{ident.strip(') ')}.wav"
            if path.is_file():
                clips.append((load_audio(path), text.strip(), f"cards/{path.name}"))
    return clips


def _variants(audio, rng):
    """(audio, description) of each degradation of one long stretch of real speech."""
    from jaxasr_interp.data import synth
    seconds = audio.size / SAMPLE_RATE
    yield synth.mix_at_snr(audio, synth.pink_noise(rng, seconds), -5.0), "+ pink noise -5 dB"
    white = white_noise(rng=rng, n_samples=int(SAMPLE_RATE * seconds))
    yield synth.mix_at_snr(audio, white, -5.0), "+ white noise -5 dB"
    yield synth.mix_at_snr(audio, synth.pink_noise(rng, seconds), -8.0), "+ pink noise -8 dB"


def candidate_pool(seed: int = 0, n_orders: int = 4, seconds: float = 24.0) -> list[dict]:
    """Candidates: dicts with ``audio``, ``text`` (reference), ``source``. Each is the real clips
    in a seeded random order, concatenated until ``seconds`` (at most 29.5 s: one window),
    under one of the noise degradations of :func:`_variants`."""
    rng = np.random.default_rng(seed)
    clips, pool = _real_clips(), []
    for _ in range(n_orders):
        parts, texts, names = [], [], []
        for i in rng.permutation(len(clips)):
            if sum(p.size for p in parts) >= seconds * SAMPLE_RATE:
                break
            parts.append(clips[i][0])
            texts.append(clips[i][1])
            names.append(clips[i][2])
        audio = np.concatenate(parts)[: int(29.5 * SAMPLE_RATE)]
        for variant, how in _variants(audio, rng):
            pool.append(dict(audio=variant, text=" ".join(texts),
                             source=f"{audio.size / SAMPLE_RATE:.1f} s of {' + '.join(names)} {how}"))
    return pool


def files_pool(paths) -> list[dict]:
    """The user's audio files as candidates: no reference text, ``source`` = the path."""
    from jaxasr_interp.whisper.audio import load_audio
    return [dict(audio=load_audio(p), text="", source=str(p)) for p in paths]


def transcribe_pool(model, pool: list[dict], *, max_new_tokens: int, batch_size: int = 8, work: Work | None = None,
                    dtype=None, precision="highest") -> list[dict]:
    """Each item of ``pool`` with its greedy ``ids``, transcript ``clean`` and ``loops``: the
    transcript loops and the item's reference ``text`` does not. ``work``: the run's work
    directory (:class:`.stages.Work`; None: in memory)."""
    work = Work(None, {}, what="repetition experiment") if work is None else work
    ids = transcribe(work, "transcripts", model, [p["audio"] for p in pool], max_new_tokens=max_new_tokens,
                     batch_size=batch_size, dtype=dtype, precision=precision)
    out = []
    for item, row in zip(pool, ids):
        text = ids_to_text(model.tokenizer, row)
        out.append({**item, "ids": row, "clean": text,
                    "loops": has_repetition(text) and not has_repetition(item["text"])})
    return out


def find_loops(model, pool: list[dict], *, max_new_tokens: int, batch_size: int = 8, **kw) -> list[dict]:
    """The items of ``pool`` whose greedy transcript loops (their reference text does not)."""
    return [it for it in transcribe_pool(model, pool, max_new_tokens=max_new_tokens, batch_size=batch_size, **kw)
            if it["loops"]]


def split_loops(items: list[dict]) -> tuple[list, list]:
    """Transcribed user files -> ``(loops, no_loop)`` as :func:`items_from_audio` returns them."""
    return ([it for it in items if it["loops"]],
            [dict(audio=it["source"], transcript=it["clean"]) for it in items if not it["loops"]])


def items_from_audio(model, paths, *, max_new_tokens: int = 96, batch_size: int = 8, **kw) -> tuple[list, list]:
    """The user's audio files (the first 30 s of each), transcribed greedily -> ``(loops,
    no_loop)``: the looping ones as items :func:`.repetition.sweep` takes (``source`` = the
    path, no reference text), and ``{"audio": path, "transcript": ...}`` of each file with no
    loop. ``kw``: ``work``, ``dtype``, ``precision`` of :func:`transcribe_pool`."""
    return split_loops(transcribe_pool(model, files_pool(paths), max_new_tokens=max_new_tokens,
                                       batch_size=batch_size, **kw))
