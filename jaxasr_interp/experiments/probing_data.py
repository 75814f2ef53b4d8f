"""Datasets and features of the probe experiments of ``configs/probes.json``.

``task_data(task, spec, work, seed)`` builds a task's dataset into ``work/<task>/data`` (kept
when already there) with the builder the config names, cut to its first ``items`` rows when
the config says; ``task_features(data, work/<task>,
model)`` extracts the model's features into ``work/<task>/features_<model>`` (resumable,
:mod:`jaxasr_interp.probes.features`). Datasets and features live in the ignored work
directory; only the results JSON is committed.

The hallucination task is built here, not in :mod:`jaxasr_interp.data`, because its classes
depend on the model: ``build_hard_pool`` writes a pool of hard utterances (fast speech, pink
noise) with their speaking rate (``speed``, espeak-ng words per minute) and noise level
(``snr_db``, 99 for clean) as columns; :func:`outcome_labels` labels each item by the WER of
the model's own greedy transcript (the one the features were extracted from), and
:func:`balanced_by_strata` keeps, in every (noise bin x rate bin) stratum, as many correct as
erroneous items, so the two classes have the same noise and rate histogram by construction.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

CLEAN_SNR = 99.0  # the snr_db of a clean item
NOISE_BINS = (0.0, 5.0, 50.0)  # snr_db edges: < 0, 0-5, 5-50, clean
RATE_BINS = (190, 240, 290)  # espeak-ng words per minute edges


def build_hard_pool(out, n: int, *, seed: int = 0, speed=(140, 340), noisy_share: float = 0.6,
                    snr=(-6.0, 12.0)) -> dict:
    """``n`` utterances of a random espeak-ng voice at a random speed, pink noise at a random
    SNR on ``noisy_share`` of them. Columns: ``speed``, ``snr_db``, ``noisy``."""
    from jaxasr_interp.data import builders as B
    from jaxasr_interp.data import synth, write_dataset
    from jaxasr_interp.whisper.audio import SAMPLE_RATE
    root, rng, version = B._prepare(out, 2), np.random.default_rng(seed), B._espeak_version()
    items = []
    for i, text in enumerate(synth.sentences(rng, n)):
        audio, source = B._any_speech(rng, text, version, speed=speed)
        level = CLEAN_SNR
        if rng.random() < noisy_share:
            level = float(rng.uniform(*snr))
            audio = synth.mix_at_snr(audio, synth.pink_noise(rng, audio.size / SAMPLE_RATE), level)
            source = f"{source} + pink noise at {level:.1f} dB"
        speed_wpm = int(source.split("speed ")[1].split(",")[0])
        items.append(dict(path=B._save(root, i, audio), transcript=text, source=source, speed=speed_wpm,
                          snr_db=f"{level:.1f}", noisy="noisy" if level < CLEAN_SNR else "clean"))
    return write_dataset(root, items, name="hard-pool", seed=seed, classes={"noisy": ["clean", "noisy"]},
                         label_source="constructed: speed and noise drawn by the builder; the outcome "
                                      "(correct / error) is the model's, computed at probe time",
                         params=dict(n=n, speed=list(speed), noisy_share=noisy_share, snr=list(snr)))


def _asked(spec: dict) -> dict:
    """The builder parameters a task's spec asks for, named as ``dataset.json`` records them."""
    if spec["builder"] == "hard-pool":
        return {"n": spec["pool"], **{key: spec[key] for key in ("speed", "noisy_share", "snr") if key in spec}}
    return {key: spec[key] for key in ("n_per_class", "engines") if key in spec}


def _check_built_as_asked(root: Path, spec: dict, seed: int) -> None:
    """A dataset built earlier with other sizes is an error, never silently reused."""
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").exists() else {}
    built = {"builder": meta.get("name"), "seed": meta.get("seed"), **meta.get("params", {})}
    norm = lambda v: sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else v
    wrong = [f"{key} {built[key]!r} (config: {value!r})"
             for key, value in {"builder": spec["builder"], "seed": seed, **_asked(spec)}.items()
             if key in built and built[key] is not None and norm(list(value) if isinstance(value, tuple) else value)
             != norm(built[key])]
    if wrong:
        raise ValueError(f"{root} was built with {', '.join(wrong)}: delete {root.parent} (dataset and "
                         f"features) to rebuild it at the config's sizes, or pass --work DIR")


def task_data(task: str, spec: dict, work, seed: int):
    from jaxasr_interp.data import BUILDERS, read_dataset
    root = Path(work) / task / "data"
    if not (root / "labels.csv").exists():
        builder = spec["builder"]
        if builder == "hard-pool":
            kw = {key: spec[key] for key in ("speed", "noisy_share", "snr") if key in spec}
            counts = build_hard_pool(root, spec["pool"], seed=seed, **kw)
        elif builder.endswith("-engines"):
            counts = BUILDERS[builder](root, spec["n_per_class"], engines=spec.get("engines"), seed=seed)
        else:
            counts = BUILDERS[builder](root, spec["n_per_class"], seed=seed)
        print(f"built {root}: {counts}", file=sys.stderr)
    data = read_dataset(root)
    _check_built_as_asked(root, spec, seed)
    if spec.get("items"):  # the first N items only (every builder here is balanced in each prefix)
        data = dataclasses.replace(data, rows=data.rows[: spec["items"]])
    return data


def task_features(data, task_dir, model, chunk_size: int, items: int | None = None):
    """Features ``[L_enc + L_dec, n, D]``, layer names and the model's transcripts
    (``items``: the dataset was cut to its first N items, extracted into their own folder)."""
    from jaxasr_interp.probes.features import extract_features, load_features, probe_matrix
    name = Path(str(model.source)).name
    out = Path(task_dir) / (f"features_{name}" + (f"_first{items}" if items else ""))
    extract_features(model, data.paths, out, chunk_size=chunk_size)
    feats = load_features(out)
    x, names = probe_matrix(feats)
    return x, names, feats.transcripts


def item_wer(references, hypotheses) -> np.ndarray:
    import jiwer

    from jaxasr_interp.whisper.text_metrics import normalize
    return np.asarray([jiwer.wer(normalize(r, "plain"), normalize(h, "plain") or "<empty>")
                       for r, h in zip(references, hypotheses)])


def outcome_labels(wer: np.ndarray, min_error_wer: float, max_correct_wer: float = 0.0) -> np.ndarray:
    """0 (correct) where WER <= ``max_correct_wer``, 1 (error) where WER > ``min_error_wer``,
    -1 (neither, left out) between."""
    return np.where(wer <= max_correct_wer, 0, np.where(wer > min_error_wer, 1, -1))


def strata(snr_db: np.ndarray, speed: np.ndarray, words: np.ndarray | None = None, *,
           noise_bins=NOISE_BINS, rate_bins=RATE_BINS) -> np.ndarray:
    """Stratum ids: noise bin x rate bin (bin edges ``noise_bins``, ``rate_bins``), and x the
    exact word count when ``words`` is given."""
    out = np.digitize(snr_db, noise_bins) * (len(rate_bins) + 1) + np.digitize(speed, rate_bins)
    if words is None:
        return out
    words = np.asarray(words, np.int64)
    return out * (int(words.max(initial=0)) + 1) + words


def pool_levels(rows) -> tuple[np.ndarray, np.ndarray]:
    """The noise level (``snr_db``) and speaking rate (``speed``) of a hard pool's rows."""
    return np.asarray([float(r["snr_db"]) for r in rows]), np.asarray([int(r["speed"]) for r in rows])


def word_counts(transcripts) -> np.ndarray:
    """Words of each transcript (split on white space)."""
    return np.asarray([len(t.split()) for t in transcripts], np.int64)


def balanced_by_strata(labels: np.ndarray, stratum: np.ndarray, seed: int) -> np.ndarray:
    """Sorted indices: in each stratum, ``min(#correct, #error)`` items of each class, drawn
    with ``seed`` (labels -1 never kept)."""
    rng = np.random.default_rng(seed)
    keep = []
    for s in np.unique(stratum):
        by_class = [np.flatnonzero((stratum == s) & (labels == c)) for c in (0, 1)]
        m = min(len(b) for b in by_class)
        keep += [rng.choice(b, m, replace=False) for b in by_class if m]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)


def matched_pairs(keep: np.ndarray, labels: np.ndarray, stratum: np.ndarray, k: int, seed: int) -> np.ndarray:
    """At most ``k`` (correct, error) pairs of the balanced ``keep`` (each pair from one
    stratum, so the balance holds), drawn with ``seed``; sorted indices."""
    pairs = []
    for s in np.unique(stratum[keep]):
        mine = keep[stratum[keep] == s]
        pairs += list(zip(mine[labels[mine] == 0], mine[labels[mine] == 1]))
    if len(pairs) > k:
        pairs = [pairs[i] for i in np.random.default_rng(seed).choice(len(pairs), k, replace=False)]
    return np.sort(np.asarray(pairs, int).reshape(-1))


def build_matched_outcomes(out, model, pool: int = 192, k: int = 24, *, seed: int = 0, min_error_wer: float = 0.5,
                           max_correct_wer: float = 0.2, batch_size: int = 8) -> dict:
    """The ``experiment probe-hallucination`` dataset: a hard pool of ``pool`` utterances
    (:func:`build_hard_pool`, in ``out/pool``; clean or pink noise at 0-20 dB, 120-260 wpm), the
    model's greedy transcripts of it, and at most ``k`` correct (WER <= ``max_correct_wer``)
    and ``k`` erroneous (WER > ``min_error_wer``) items, balanced on noise and rate by
    construction (:func:`balanced_by_strata`, then whole pairs of one stratum). Columns
    ``outcome`` (correct / error), ``wer``, ``hypothesis``, ``speed``, ``snr_db``."""
    from jaxasr_interp.data import read_dataset, write_dataset
    from jaxasr_interp.whisper.api import transcribe
    root = Path(out)
    if (root / "labels.csv").exists():
        raise FileExistsError(f"{root} already holds a dataset; choose another directory")
    if not (root / "pool" / "labels.csv").exists():
        build_hard_pool(root / "pool", pool, seed=seed, speed=(120, 260), noisy_share=0.5, snr=(0.0, 20.0))
    data = read_dataset(root / "pool")
    hyps = transcribe(model, [str(p) for p in data.paths], batch_size=batch_size, progress=True)
    wer = item_wer([r["transcript"] for r in data.rows], hyps)
    labels = outcome_labels(wer, min_error_wer, max_correct_wer)
    stratum = strata(*pool_levels(data.rows))
    keep = matched_pairs(balanced_by_strata(labels, stratum, seed), labels, stratum, k, seed)
    if keep.size < 4:
        raise ValueError(f"the pool of {pool} gave {int((labels == 0).sum())} correct and {int((labels == 1).sum())} "
                         f"erroneous items but {keep.size // 2} pairs matched on noise and rate; enlarge --pool")
    items = [dict(path=f"pool/{data.rows[i]['path']}", transcript=data.rows[i]["transcript"],
                  source=data.rows[i]["source"], outcome=("correct", "error")[labels[i]], wer=f"{wer[i]:.4f}",
                  hypothesis=hyps[i].strip(), speed=data.rows[i]["speed"], snr_db=data.rows[i]["snr_db"]) for i in keep]
    return write_dataset(root, items, name="matched-outcomes", seed=seed, classes={"outcome": ["correct", "error"]},
                         label_source=f"model errors: WER of {model.source} greedy transcripts against the synthesis "
                                      f"text (correct <= {max_correct_wer}, error > {min_error_wer}), balanced on "
                                      f"noise and rate strata",
                         params=dict(pool=pool, k=k, model=model.source, min_error_wer=min_error_wer,
                                     max_correct_wer=max_correct_wer))
