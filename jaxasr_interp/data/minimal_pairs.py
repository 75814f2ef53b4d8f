"""Contextual-bias stimuli: sentences whose context predicts one word while another is spoken.

The paper's example is "white lice" spoken where "white rice" is expected. Here each entry of
:data:`PAIRS` is a minimal pair (``spoken``, ``expected``): two words that differ in one
phoneme, and four sentence templates whose context strongly predicts ``expected``; the slot
``{}`` is filled with ``spoken``. :func:`generate` enumerates pairs x templates in a fixed
order (no randomness at all), so the same call always gives the same list: 25 pairs x 4
templates = 100 sentences; ``generate(pairs=ALL_PAIRS)`` adds the 75 pairs of
:mod:`.more_pairs` for 400. An ASR model that writes ``expected`` has made a *contextual error*;
one that writes ``spoken`` is acoustically correct.

:func:`read_user_list` reads a user's list in the same shape: a CSV (or, named ``*.tsv``, a
tab-separated file) whose header line names the columns ``sentence,spoken,expected`` and
optionally ``audio``; one sentence per line after it, blank lines and lines starting with ``#``
skipped. ``spoken`` (the word said, the acoustic one) must occur in ``sentence``; ``expected``
(the word the context predicts, the competitor) must not. ``audio``, where given, is a recording
of the sentence (a path relative to the list's folder, or absolute) used instead of synthesis.
Every malformed line is one ``ValueError`` naming the file and the line number.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

from jaxasr_interp.data.more_pairs import MORE_PAIRS

# (spoken, expected): four templates each, context predicting `expected`, slot = spoken word.
PAIRS = {
    ("lice", "rice"): ["I ate a bowl of white {} with my curry", "The farmers grow {} in flooded paddy fields",
                       "She cooked {} and beans for dinner", "Sushi is made with sticky {} and fish"],
    ("glass", "grass"): ["The cows were eating the green {} in the meadow", "He lay on the {} and looked at the sky",
                         "Please keep off the freshly cut {}", "He mowed the {} in his garden"],
    ("fry", "fly"): ["The bird spread its wings to {} away", "Birds {} south for the winter",
                     "I watched the eagle {} over the mountains", "The pilot learned to {} a plane"],
    ("play", "pray"): ["The monks kneel in the temple to {} every morning", "They went to church to {} on Sunday",
                       "Let us bow our heads and {} together", "She lit a candle and began to {} to God"],
    ("collect", "correct"): ["The teacher said my answer was {}", "Please check that the spelling is {}",
                             "You are absolutely {} about that", "The exam answer was marked {}"],
    ("lead", "read"): ["I like to {} a good book before bed", "She learned to {} and write at school",
                       "Please {} the instructions carefully", "He sat in the library to {} the newspaper"],
    ("light", "right"): ["Take the second street on the {} after the bank", "He writes with his {} hand",
                         "Turn {} at the next corner", "You were {} and I was wrong"],
    ("lock", "rock"): ["The climber held on to the {} with both hands", "They listened to loud {} music all night",
                       "The waves crashed against the {} by the shore", "He threw a {} into the pond"],
    ("bark", "park"): ["The children played on the swings in the {}", "We walked the dog in the {} this morning",
                       "They had a picnic in the {} near the lake", "The city built a new {} with tall trees"],
    ("coat", "goat"): ["The farmer milked the {} every morning", "We made cheese from the milk of a {}",
                       "The {} climbed the steep rocky hillside", "The little {} said baa and ate the grass"],
    ("pen", "hen"): ["The {} laid an egg in the barn", "The farmer fed the {} and the chickens",
                     "Every morning the {} clucked in the yard", "The fox crept into the coop and caught a {}"],
    ("ship", "sheep"): ["The farmer sheared the {} for their wool", "The dog herded the {} into the field",
                        "A flock of {} grazed on the hill", "The shepherd counted every {} in the flock"],
    ("mouse", "house"): ["They bought a new {} with a big garden", "We painted our {} white last summer",
                         "The family moved into a bigger {}", "He locked the front door of his {}"],
    ("cake", "lake"): ["We went swimming in the {} on a hot day", "The boat sailed across the {}",
                       "Ducks were floating on the {}", "The fisherman rowed to the middle of the {}"],
    ("silk", "milk"): ["The baby drank a bottle of warm {}", "She poured {} into her coffee",
                       "The cow gave fresh {} this morning", "He ate cereal with cold {} for breakfast"],
    ("boat", "coat"): ["She wore a warm winter {} in the snow", "He hung his {} on the hook by the door",
                       "Put on your {} because it is cold", "The buttons on my {} are loose"],
    ("log", "dog"): ["The {} barked at the mailman", "She took her {} for a walk on a leash",
                     "The {} wagged its tail happily", "The puppy grew into a big {}"],
    ("bet", "bed"): ["I was tired so I went to {} early", "The children jumped on the {}",
                     "He made his {} in the morning", "She slept in a soft warm {}"],
    ("hat", "cat"): ["The {} chased the mouse across the floor", "The {} purred softly on my lap",
                     "She fed the {} a dish of fish", "The {} meowed at the door"],
    ("tea", "key"): ["He unlocked the door with his {}", "I lost the {} to my car",
                     "She turned the {} and opened the door", "The spare {} is under the doormat"],
    ("sand", "hand"): ["He shook my {} firmly", "She raised her {} to ask a question",
                       "He wore a ring on his left {}", "Hold my {} when we cross the road"],
    ("pie", "tie"): ["He wore a suit and a silk {} to the wedding", "Dad fixed the knot of his {}",
                     "The businessman loosened his {}", "She gave him a striped {} for his birthday"],
    ("cab", "cap"): ["He wore a baseball {} to keep the sun off", "Put the {} back on the bottle",
                     "The sailor tipped his {}", "He turned his {} backwards"],
    ("cold", "gold"): ["The pirate buried a chest full of {}", "She won the {} medal at the games",
                       "The ring was made of pure {}", "The miners dug for {} in the river"],
    ("sing", "ring"): ["He put the wedding {} on her finger", "She wore a diamond {} on her hand",
                       "The phone began to {} loudly", "He proposed with a beautiful {}"],
}
# Why these: single-phoneme changes (l/r, s/sh, k/g, p/b...), common words both of them, and
# contexts where the expected word is the overwhelmingly likely continuation.
ALL_PAIRS = {**PAIRS, **MORE_PAIRS}  # 100 pairs x 4 templates = 400 sentences


@dataclasses.dataclass(frozen=True)
class Stimulus:
    sentence: str
    spoken: str
    expected: str
    pair: str = ""
    template: int = -1  # index of the template; a user list's line number
    audio: str = ""  # a recording of the sentence; empty: synthesize it


def _check(s: Stimulus) -> Stimulus:
    words = re.findall(r"[a-z']+", s.sentence.lower())
    if s.spoken.lower() not in words:
        raise ValueError(f"the spoken word {s.spoken!r} does not occur in {s.sentence!r}")
    if s.expected.lower() in words:
        raise ValueError(f"the expected word {s.expected!r} already occurs in {s.sentence!r}")
    if s.spoken.lower() == s.expected.lower():
        raise ValueError(f"spoken and expected are the same word in {s.sentence!r}")
    return s


def generate(n: int | None = None, *, pairs: dict | None = None) -> list[Stimulus]:
    """All ``pairs`` (default :data:`PAIRS`; :data:`ALL_PAIRS` for 400 sentences) x templates
    in a fixed order (pair-major), the first ``n`` if given."""
    out = []
    for (spoken, expected), templates in (PAIRS if pairs is None else pairs).items():
        for t, template in enumerate(templates):
            sentence = template.format(spoken)
            sentence = sentence[0].upper() + sentence[1:] + "."
            out.append(_check(Stimulus(sentence, spoken, expected, f"{spoken}/{expected}", t)))
    return out if n is None else out[:n]


COLUMNS, OPTIONAL = ("sentence", "spoken", "expected"), ("audio",)


def read_user_list(path) -> list[Stimulus]:
    """A CSV / TSV with columns ``sentence,spoken,expected[,audio]`` -> checked stimuli (see the
    module's docstring); a malformed line is one ``ValueError``: ``FILE, line N: what is wrong``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentence list not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # comment lines blanked: line numbers kept
            lines = ["\n" if line.lstrip().startswith("#") else line for line in f]
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    reader = csv.reader(lines, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    header, out, line = None, [], 1
    try:
        for fields in reader:
            line, start = reader.line_num + 1, line  # start: the record's first line
            if not any(v.strip() for v in fields):
                continue
            if any("\n" in v or "\r" in v for v in fields):
                raise ValueError(f"{path}, line {start}: a field runs over several lines (a '\"' left open?)")
            if header is None:
                header = _header(path, start, fields)
            else:
                out.append(_row(path, start, fields, header))
    except csv.Error as e:
        raise ValueError(f"{path}, line {line}: {e}") from None
    if header is None:
        raise ValueError(f"{path} is empty; its first line must name the columns sentence,spoken,expected[,audio]")
    if not out:
        raise ValueError(f"{path} holds no sentences, only its header line")
    return out


def _header(path, line: int, fields: list) -> list[str]:
    header = [h.strip().lower() for h in fields]
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS + OPTIONAL]
    if missing or unknown or len(set(header)) < len(header):
        what = (f"lacks the column(s) {', '.join(missing)}" if missing else
                f"has the unknown column(s) {', '.join(map(repr, unknown))}" if unknown else "repeats a column")
        raise ValueError(f"{path}, line {line}: the header {what}; expected the columns sentence,spoken,expected "
                         "and optionally audio")
    return header


def _fields(fields) -> str:
    return f"{len(fields)} field" + ("" if len(fields) == 1 else "s")


def _row(path, line: int, fields: list, header: list) -> Stimulus:
    """One data line -> a checked stimulus; every problem names ``path`` and ``line``."""
    where = f"{path}, line {line}"
    if len(fields) > len(header):
        raise ValueError(f"{where}: {_fields(fields)}, the header names {len(header)} "
                         "(quote a sentence that contains the separator)")
    values = dict(zip(header, (v.strip() for v in fields)))
    for c in COLUMNS:
        if not values.get(c):
            raise ValueError(f"{where}: the {c!r} field is empty" if c in values else
                             f"{where}: the {c!r} field is missing ({_fields(fields)}, the header names "
                             f"{len(header)})")
    audio = values.get("audio", "")
    if audio:
        audio_path = Path(audio).expanduser()
        audio_path = audio_path if audio_path.is_absolute() else path.parent / audio_path
        if not audio_path.is_file():
            raise ValueError(f"{where}: audio file not found: {audio_path}")
        audio = str(audio_path)
    s = Stimulus(values["sentence"], values["spoken"], values["expected"],
                 f"{values['spoken']}/{values['expected']}", line, audio)
    try:
        return _check(s)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
