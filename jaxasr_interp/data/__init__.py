"""Probing datasets: one on-disk format and the builders of the paper's probing experiments.

Format (a directory)::

    DIR/dataset.json   {"format": "jaxasr-interp dataset v1", "name", "seed", "label_source",
                        "classes": {column: [class names in index order]},
                        "counts": {column: {class: items}}, "params": {builder arguments}}
    DIR/labels.csv     one row per item: "path" (relative to DIR), "transcript" (the text
                       spoken, empty for non-speech), "source" (how the audio was made), then
                       one column per label (class names as text) and any extra columns
    DIR/audio/*.wav    16 kHz mono 16-bit PCM

Any tool can write it; :func:`write_dataset` does, :func:`read_dataset` reads and checks it
(missing files, unknown classes and missing columns are errors naming them).
``Dataset.encoded(column)`` gives the class indices ``[n]`` in the order of ``classes``.

Builders (:mod:`.builders`) make the paper's datasets from synthesized speech (espeak-ng
voices, variants and accents; optionally the bundled piper voice), the bundled and installed
real recordings (:mod:`.real`), generated noise, tones and silence; :mod:`.by_engine` draws
gender and accent across the engines of :mod:`.engines` (espeak-ng, flite, festival, piper)
with an ``engine`` column, for the held-out-engine splits of :mod:`.splits`. Every builder is
deterministic for a seed, writes where its labels come from into ``label_source`` and returns
the class counts.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxasr_interp.whisper.audio import SAMPLE_RATE  # noqa: F401  (the format's rate, re-exported)

FORMAT = "jaxasr-interp dataset v1"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset read from disk: ``rows`` (dicts of the CSV's text) and its ``meta``."""

    root: Path
    rows: list
    meta: dict

    @property
    def paths(self) -> list[Path]:
        return [self.root / r["path"] for r in self.rows]

    @property
    def label_columns(self) -> list[str]:
        return list(self.meta["classes"])

    def encoded(self, column: str) -> tuple[np.ndarray, list[str]]:
        """Class indices ``[n]`` of a label column and the class names."""
        if column not in self.meta["classes"]:
            raise KeyError(f"no label column {column!r} in {self.root}; "
                           f"label columns: {', '.join(self.label_columns)}")
        names = self.meta["classes"][column]
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[r[column]] for r in self.rows], np.int32), list(names)


def write_dataset(root, items: list[dict], *, name: str, seed: int, label_source: str,
                  classes: dict[str, list[str]], params: dict) -> dict:
    """Write ``labels.csv`` and ``dataset.json`` for items whose audio is already under
    ``root`` (each item a dict with ``path``, ``transcript``, ``source`` and the label
    columns). Returns the class counts."""
    root = Path(root)
    counts = {c: {k: sum(1 for it in items if it[c] == k) for k in names} for c, names in classes.items()}
    columns = ["path", "transcript", "source"] + [c for c in items[0] if c not in ("path", "transcript", "source")]
    with open(root / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(items)
    meta = dict(format=FORMAT, name=name, seed=seed, label_source=label_source, classes=classes,
                counts=counts, params=params)
    (root / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return counts


def read_dataset(root) -> Dataset:
    """Read and check a dataset directory (module docstring)."""
    root = Path(root)
    for name in ("dataset.json", "labels.csv"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} is not a dataset: {name} is missing (see jaxasr_interp.data)")
    meta = json.loads((root / "dataset.json").read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{root}/dataset.json has format {meta.get('format')!r}, expected {FORMAT!r}")
    with open(root / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{root}/labels.csv has no items")
    for column, names in meta["classes"].items():
        if column not in rows[0]:
            raise ValueError(f"{root}/labels.csv lacks the label column {column!r}")
        bad = {r[column] for r in rows} - set(names)
        if bad:
            raise ValueError(f"{root}/labels.csv: column {column!r} has unknown classes {sorted(bad)}")
    missing = [r["path"] for r in rows if not (root / r["path"]).is_file()]
    if missing:
        raise FileNotFoundError(f"{root}: {len(missing)} audio files missing, e.g. {missing[0]}")
    return Dataset(root, rows, meta)


from jaxasr_interp.data.builders import build_accent, build_gender, build_hallucination, build_noise, build_speech
from jaxasr_interp.data.by_engine import build_accent_engines, build_gender_engines

BUILDERS = {"gender": build_gender, "accent": build_accent, "noise": build_noise,
            "speech": build_speech, "hallucination": build_hallucination,
            "gender-engines": build_gender_engines, "accent-engines": build_accent_engines}
