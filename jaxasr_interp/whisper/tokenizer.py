"""Whisper's tokenizer from a ``tokenizer.json``: special tokens by name, prompts, text.

English-only models start a transcript with ``<|startoftranscript|><|notimestamps|>``;
multilingual ones with ``<|startoftranscript|><|LANG|><|transcribe|><|notimestamps|>``.
Special ids differ between the two vocabularies (51864 vs 51865 tokens), which is why they are
always looked up by name. Timestamp tokens (every id above ``<|notimestamps|>``) are not in the
``tokenizer.json`` files and are dropped, with the other special tokens, when text is decoded.

:func:`teacher_tokens` builds a teacher-forced pass's tokens (prompt + transcript +
end-of-text, end-of-text padded to a fixed width) and :func:`cut_at_eot` cuts a greedy row at
its end-of-text: every module does both through these two.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import tokenizers

# Punctuation and symbols openai/whisper suppresses as "non-speech" (its `non_speech_tokens`).
_NON_SPEECH = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』') + [
    "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))",
    "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
_MISC_SYMBOLS = "♩♪♫♬♭♮♯"


def cut_at_eot(ids, eot: int) -> list[int]:
    """The ids before the first end-of-text (all of them when there is none), as ints: a
    greedy row ``[t1, t2, eot, eot, ...]`` -> ``[t1, t2]``."""
    ids = [int(i) for i in ids]
    return ids[: ids.index(eot)] if eot in ids else ids


def teacher_tokens(prompt, ids, eot: int, width: int | None = None) -> list[int]:
    """The decoder tokens of a teacher-forced pass: ``prompt + ids + [eot]``, and with
    ``width`` padded with end-of-text to that length (or cut to it). Positions are causal, so
    padding changes nothing before it, and one width lets every utterance share one compiled
    program."""
    seq = [int(i) for i in prompt] + [int(i) for i in ids] + [eot]
    return seq if width is None else (seq + [eot] * width)[:width]


@dataclasses.dataclass(frozen=True, eq=False)
class WhisperTokenizer:
    tokenizer: tokenizers.Tokenizer
    multilingual: bool
    path: Path | None = None

    @classmethod
    def from_file(cls, path: str | Path, multilingual: bool) -> "WhisperTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        return cls(tokenizers.Tokenizer.from_file(str(path)), multilingual, path)

    def special(self, name: str) -> int:
        """The id of ``<|name|>``; a clear error when this vocabulary has no such token."""
        token = name if name.startswith("<|") else f"<|{name}|>"
        idx = self.tokenizer.token_to_id(token)
        if idx is None:
            raise ValueError(f"token {token} is not in this tokenizer ({self.path or 'in memory'})")
        return idx

    @property
    def eot(self) -> int:
        return self.special("endoftext")

    @property
    def sot(self) -> int:
        return self.special("startoftranscript")

    @property
    def no_timestamps(self) -> int:
        return self.special("notimestamps")

    def prompt(self, language: str | None = "en", task: str = "transcribe",
               timestamps: bool = False) -> list[int]:
        """Start-of-transcript prompt ids for this model."""
        ids = [self.sot]
        if self.multilingual:
            if language is not None:
                ids.append(self.special(language))
            if task not in ("transcribe", "translate"):
                raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
            ids.append(self.special(task))
        if not timestamps:
            ids.append(self.no_timestamps)
        return ids

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        """Text of the ids up to the first end-of-text, without special or timestamp tokens."""
        text_ids = []
        for i in map(int, ids):
            if i == self.eot:
                break
            if i < self.eot:
                text_ids.append(i)
        return self.tokenizer.decode(text_ids, skip_special_tokens=False)

    @functools.cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Ids of symbols openai/whisper suppresses by default, found the same way it does."""
        symbols = _NON_SPEECH + list(_MISC_SYMBOLS)
        ids = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols:
            for variant in (symbol, " " + symbol):
                tokens = self.encode(variant)
                if len(tokens) == 1 or (symbol in _MISC_SYMBOLS and tokens):
                    ids.add(tokens[0])
        return tuple(sorted(ids))

    def suppress_ids(self) -> tuple[int, ...]:
        """openai/whisper's default ``suppress_tokens="-1"`` set: non-speech symbols plus the
        task, start and no-speech specials (a model never needs to emit them mid-transcript)."""
        names = ["transcribe", "translate", "startoftranscript", "startofprev", "startoflm",
                 "nospeech", "nocaptions"]
        extra = [self.tokenizer.token_to_id(f"<|{n}|>") for n in names]
        return tuple(sorted(set(self.non_speech_tokens) | {i for i in extra if i is not None}))

    def blank_ids(self) -> tuple[int, ...]:
        """Suppressed at the first sampled position only: a space and end-of-text."""
        return tuple(self.encode(" ")) + (self.eot,)
