"""The paper's probing experiments end to end: build data -> extract features -> probe ->
per-layer CSV + plot + a one-line best-layer summary.

``probe_dataset(data_dir, target, out_dir, model=...)`` probes one label column of any dataset
in the :mod:`jaxasr_interp.data` format (features are extracted into ``out_dir/features``
unless given, resumably). ``run_experiment(name, out_dir, model=...)`` builds the dataset of
one of :data:`EXPERIMENTS` first (skipped when ``out_dir/data`` already holds it).
Output files: ``probe_<target>.csv`` (one row per encoder and decoder layer) and
``probe_<target>.png``; the returned dict has the best encoder and decoder layers.

The issue-15 experiments (nested cross-validation, bootstrap intervals, controls, held-out
engines, nuisance probes) run from one command and a checked-in config::

    python -m jaxasr_interp.experiments.probing --config configs/probes.json --model tiny.en --out results/

(:mod:`.probing_nested`; datasets and features in the config's ignored ``work`` directory).

Resumable: the feature extraction is the long part and checkpoints every chunk of utterances
(:func:`.probes.features.extract_features`, the one resumable mechanism); a rerun with the same
``out_dir`` resumes it, and a dataset already built in ``out_dir/data`` is kept. ``dtype`` /
``precision`` (:mod:`jaxasr_interp.core.dtypes`): the model's, while extracting features.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

EXPERIMENTS = {
    "probe-gender": dict(builder="gender", target="gender", n=40,
                         paper="94.6% at encoder layer 25 of 32 (large-v3, secondary)"),
    "probe-accent": dict(builder="accent", target="accent", n=16,
                         paper="97.0% at encoder layer 22 of 32 (large-v3, 4 classes, secondary)"),
    "probe-noise": dict(builder="noise", target="noisy", n=40,
                        paper="90.0% at encoder layer 27 of 32 (large-v3, secondary)"),
    "probe-speech": dict(builder="speech", target="speech", n=40,
                         paper="100% at decoder layers 10-28 of 32 (large-v3, secondary)"),
    "probe-hallucination": dict(builder="matched-outcomes", target="outcome", n=24,
                                paper="93.4% LibriSpeech / 88.1% Common Voice at decoder layer 22 of 32 "
                                      "(large-v3, secondary)"),
}
FIELDS = ["stack", "layer", "accuracy", "balanced_accuracy", "control_accuracy", "chance", "l2", "n_items"]


def probe_rows(result, names, n_items) -> list[dict]:
    rows = []
    for row in result.summary():
        stack, layer = names[row["layer"]].split(".")
        rows.append(dict(stack=stack, layer=int(layer), accuracy=row["accuracy"],
                         balanced_accuracy=row["balanced_accuracy"], control_accuracy=row["control_accuracy"],
                         chance=row["chance"], l2=row["l2"], n_items=n_items))
    return rows


def _best(rows, stack):
    mine = [r for r in rows if r["stack"] == stack]
    best = max(mine, key=lambda r: (round(r["accuracy"], 6), -r["layer"]))  # ties: the earliest
    return dict(layer=best["layer"], of=len(mine), accuracy=best["accuracy"],
                control=best["control_accuracy"], chance=best["chance"])


def probe_dataset(data_dir, target: str, out_dir, *, model="tiny.en", features_dir=None,
                  folds: int = 5, seeds=(0, 1, 2), l2=(1e-3, 1e-2, 1e-1), chunk_size: int = 8,
                  title: str | None = None, dtype=None, precision="highest") -> dict:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.data import read_dataset
    from jaxasr_interp.probes.features import extract_features, load_features, probe_matrix
    from jaxasr_interp.plots.probes import plot_probe_layers
    from jaxasr_interp.probes.sweep import probe_sweep

    data = read_dataset(data_dir)
    labels, classes = data.encoded(target)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    features_dir = Path(features_dir) if features_dir else out / "features"
    loaded = load(model) if isinstance(model, str) else model
    extract_features(loaded, data.paths, features_dir, chunk_size=chunk_size, dtype=dtype, precision=precision)
    feats = load_features(features_dir)
    x, names = probe_matrix(feats)
    result = probe_sweep(x, labels, k=folds, seeds=seeds, l2=l2)
    rows = probe_rows(result, names, len(labels))
    with open(out / f"probe_{target}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    counts = dict(zip(classes, np.bincount(labels, minlength=len(classes)).tolist()))
    plot_probe_layers(rows, out / f"probe_{target}.png",
                      title=title or f"{target} probe, {loaded.source}, {len(labels)} items {counts}")
    return dict(target=target, model=loaded.source, n_items=len(labels), counts=counts,
                encoder=_best(rows, "encoder"), decoder=_best(rows, "decoder"),
                csv=str(out / f"probe_{target}.csv"), plot=str(out / f"probe_{target}.png"))


def run_experiment(name: str, out_dir, *, model="tiny.en", n_per_class: int | None = None,
                   seed: int = 0, pool: int | None = None, dtype=None, precision="highest", **probe_kw) -> dict:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.data import BUILDERS

    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)}")
    spec = EXPERIMENTS[name]
    out = Path(out_dir)
    data_dir = out / "data"
    loaded = load(model) if isinstance(model, str) else model
    n = n_per_class or spec["n"]
    if not (data_dir / "labels.csv").exists():
        if spec["builder"] == "matched-outcomes":  # classes from the model's errors, noise and rate balanced
            from jaxasr_interp.experiments.probing_data import build_matched_outcomes
            counts = build_matched_outcomes(data_dir, loaded, pool=pool or 8 * n, k=n, seed=seed)
        else:
            counts = BUILDERS[spec["builder"]](data_dir, n, seed=seed)
        print(f"built {data_dir}: {counts}", file=sys.stderr)  # stdout stays the summary (--json)
    summary = probe_dataset(data_dir, spec["target"], out, model=loaded, title=f"{name}: {loaded.source}",
                            dtype=dtype, precision=precision, **probe_kw)
    summary.update(experiment=name, paper=spec["paper"])
    return summary


def format_summary(s: dict) -> str:
    enc, dec = s["encoder"], s["decoder"]
    return (f"{s.get('experiment', s['target'])} [{s['model']}, {s['n_items']} items {s['counts']}]: "
            f"best encoder layer {enc['layer']}/{enc['of']} {100 * enc['accuracy']:.1f}% "
            f"(control {100 * enc['control']:.1f}%), best decoder layer {dec['layer']}/{dec['of']} "
            f"{100 * dec['accuracy']:.1f}% (control {100 * dec['control']:.1f}%), chance {100 * enc['chance']:.1f}%"
            + (f"; paper: {s['paper']}" if "paper" in s else ""))


def main(argv=None) -> int:
    import argparse
    import json
    from jaxasr_interp.experiments.probing_nested import run_probes
    p = argparse.ArgumentParser(prog="python -m jaxasr_interp.experiments.probing",
                                description="Probe experiments of a config; writes OUT/probes_MODEL.json")
    p.add_argument("--config", default="configs/probes.json")
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--out", default="results")
    p.add_argument("--tasks", default=None, help="comma-separated subset of the config's tasks")
    p.add_argument("--work", default=None, help="datasets and features (default: the config's work folder)")
    args = p.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    config["work"] = args.work or config["work"]
    path = run_probes(config, args.model, args.out, tasks=args.tasks.split(",") if args.tasks else None,
                      config_path=args.config)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
