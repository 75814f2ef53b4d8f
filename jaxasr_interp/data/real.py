"""Real recordings available offline, with only the labels their documentation gives.

:func:`clips` lists them (those whose files exist here), :func:`load` reads one as float32
mono 16 kHz. Sources:

* the bundled clips (:func:`..whisper.audio.sample_path`, ``samples/README.md``): JFK's
  inaugural address (speaker documented: John F. Kennedy, so ``gender`` male, ``accent`` us)
  and five LibriVox utterances of *Sense and Sensibility* chapter 1 (one chapter, one reader;
  the reader is not named there, so gender and accent stay unknown);
* Debian ``pocketsphinx-testdata`` (``/usr/share/pocketsphinx/test/data``): the ``cards``
  utterances (texts from ``cards.transcription``), ``goforward.raw`` (the pocketsphinx tests'
  expected text, the ``<move>`` rule of ``goforward.gram``) and ``tidigits/dhd.2934z.raw``
  (TIDIGITS names a file by speaker and digit string, ``z`` = zero; the same string is read
  "two nine three four zero" in ``test-tidigits-simple.match``). Its ``librivox`` folder holds
  the same five files as the bundled ones (byte copies), so it is not listed twice; its other
  raw files have no documented text. No speaker of this package has a documented gender.

An unknown label is ``""``: such a clip is a ``speech`` item and a real-speech transcript,
never a gender or accent item.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxasr_interp.whisper.audio import load_audio, sample_path, sample_transcripts

POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
# name -> (transcript, speaker id); raw files are headerless 16-bit little-endian at 16 kHz.
_POCKETSPHINX_RAW = {"goforward.raw": ("go forward ten meters", ""),
                     "tidigits/dhd.2934z.raw": ("two nine three four zero", "tidigits:dhd")}


@dataclasses.dataclass(frozen=True)
class Clip:
    name: str  # "bundled/jfk.wav", "pocketsphinx/cards/001.wav", ...
    path: Path
    transcript: str
    speaker: str = ""  # "" when unknown
    gender: str = ""  # "" unless documented
    accent: str = ""
    note: str = ""  # where the transcript and labels come from

    def labels(self) -> dict:
        return dict(gender=self.gender, accent=self.accent, speaker=self.speaker)


def _bundled() -> list[Clip]:
    out = []
    for name, text in sample_transcripts().items():
        if name == "jfk.wav":
            out.append(Clip(f"bundled/{name}", sample_path(name), text, "jfk", "male", "us",
                            "John F. Kennedy, 1961 inaugural address (samples/README.md)"))
        else:
            out.append(Clip(f"bundled/{name}", sample_path(name), text, "librivox:sense_and_sensibility_01", "", "",
                            "LibriVox reading, reader not documented (samples/README.md)"))
    return out


def _cards(root: Path) -> list[Clip]:
    listing = root / "cards" / "cards.transcription"
    if not listing.is_file():
        return []
    out = []
    for line in listing.read_text().splitlines():
        if "(" not in line:
            continue
        text, ident = line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)
        path = root / "cards" / f"{ident.strip(') ')}.wav"
        if path.is_file():
            out.append(Clip(f"pocketsphinx/cards/{path.name}", path, " ".join(text.split()), note="cards.transcription"))
    return out


def clips(pocketsphinx: Path | None = POCKETSPHINX) -> list[Clip]:
    """Every real clip found here, bundled first, in a fixed order."""
    out = _bundled()
    if pocketsphinx is not None:
        root = Path(pocketsphinx)
        out += _cards(root)
        for name, (text, speaker) in _POCKETSPHINX_RAW.items():
            if (root / name).is_file():
                out.append(Clip(f"pocketsphinx/{name}", root / name, text, speaker, note="pocketsphinx test data"))
    return out


def load(clip: Clip) -> np.ndarray:
    """The clip as float32 mono 16 kHz."""
    if clip.path.suffix == ".raw":
        return load_audio(np.fromfile(clip.path, "<i2").astype(np.float32) / 32768.0)
    return load_audio(clip.path)


def labelled(column: str, classes=None) -> list[Clip]:
    """The clips whose ``column`` (gender, accent) is documented, within ``classes`` if given."""
    return [c for c in clips() if getattr(c, column) and (classes is None or getattr(c, column) in classes)]
