"""Text scores for transcripts: normalisation, WER/CER error counts, repetition.

Contract:

- :func:`normalize` is the one text normaliser. ``"english"`` applies Whisper's English
  normaliser: transformers' ``EnglishTextNormalizer`` with Whisper's British -> American
  spelling map (:func:`english_spelling_map`), exactly as openai-whisper and transformers'
  ``WhisperTokenizer.normalize`` score, so "colour" and "color" are the same word; ``"basic"`` applies ``BasicTextNormalizer`` (any language); ``"plain"`` lower-cases,
  turns everything but ``a-z``, ``0-9`` and apostrophes into spaces and collapses them (the
  words of :func:`words`: repetition detection, behavioural WER, dataset labels); ``None``
  leaves the text as it is (stripped).
- :func:`word_errors` / :func:`char_errors` return ``(errors, reference_length)`` so that rates
  can be pooled over utterances (corpus WER = sum of errors / sum of lengths). An empty
  reference is allowed: every hypothesis word is then an insertion (jiwer refuses it).
- :func:`max_repeat` is the longest run of one n-gram repeated back to back (1 = no repetition);
  :func:`compression_ratio` is openai/whisper's ``len(utf8) / len(zlib(utf8))`` (Whisper treats
  > 2.4 as a repetition loop).
"""

from __future__ import annotations

import functools
import json
import re
import zlib
from pathlib import Path

import jiwer

# Whisper's spelling map, vendored unchanged from openai-whisper 20250625 (PyPI sdist,
# whisper/normalizers/english.json; MIT License, Copyright (c) 2022 OpenAI: see
# english_spelling.LICENSE beside it). The same table is the hub's ``normalizer.json`` of the
# openai/whisper-* checkpoints; neither transformers nor the bundled models ship it.
SPELLING_MAP = Path(__file__).with_name("english_spelling.json")


@functools.lru_cache(maxsize=1)
def english_spelling_map() -> dict[str, str]:
    """Whisper's British -> American spelling map, ``{"colour": "color", ...}`` (cached and
    shared: do not mutate it)."""
    with open(SPELLING_MAP, encoding="utf-8") as f:
        return json.load(f)


@functools.lru_cache(maxsize=2)
def _normalizer(kind: str):
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer
    if kind == "english":
        return EnglishTextNormalizer(english_spelling_map())
    if kind == "basic":
        return BasicTextNormalizer()
    raise ValueError(f"normalizer must be 'english', 'basic', 'plain' or None, got {kind!r}")


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (apostrophes kept): ``"Hello, World! It's"`` ->
    ``["hello", "world", "it's"]``."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def normalize(text: str, kind: str | None = "english") -> str:
    """``text`` normalised for scoring (module docstring: ``"english"``, ``"basic"``,
    ``"plain"`` or None)."""
    if kind is None:
        return text.strip()
    if kind == "plain":
        return " ".join(words(text))
    return _normalizer(kind)(text).strip()


def _errors(ref: list, hyp: list, process) -> tuple[int, int]:
    if not ref:
        return len(hyp), 0
    if not hyp:
        return len(ref), len(ref)
    out = process(" ".join(ref) if process is jiwer.process_words else "".join(ref),
                  " ".join(hyp) if process is jiwer.process_words else "".join(hyp))
    return out.substitutions + out.deletions + out.insertions, len(ref)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) of already-normalised text."""
    return _errors(reference.split(), hypothesis.split(), jiwer.process_words)


def char_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """Character-level error count and reference length (spaces count as characters)."""
    return _errors(list(reference), list(hypothesis), jiwer.process_characters)


def rate(errors: int, length: int) -> float:
    """errors / length; an empty reference scores 0 when nothing was said, else inf."""
    if length == 0:
        return 0.0 if errors == 0 else float("inf")
    return errors / length


def max_repeat(tokens: list, max_n: int = 8) -> int:
    """Longest run of an n-gram (n <= max_n) repeated back to back: ``a b a b a b`` -> 3."""
    best = 1 if tokens else 0
    for n in range(1, max_n + 1):
        for start in range(n):  # every phase of the n-gram grid
            run = 1
            for i in range(start + n, len(tokens) - n + 1, n):
                run = run + 1 if tokens[i:i + n] == tokens[i - n:i] else 1
                best = max(best, run)
    return best


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
