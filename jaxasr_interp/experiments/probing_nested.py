"""The probe experiments of a config (``configs/probes.json``) as one results JSON.

``run_probes(config, model, out_dir)`` writes ``out_dir/probes_<model>.json``: per task, per
encoder and decoder layer, the nested-cross-validation accuracy (L2 chosen on inner folds),
the control (shuffled-label) accuracy and the selectivity (accuracy - control), each with a
95% percentile bootstrap interval over items and its n (:mod:`jaxasr_interp.core.stats`); the
best layer chosen on inner folds; the majority-class rate; held-out-engine and
leave-one-speaker-out generalisation where the config asks (``held_out``); and nuisance probes
on the same features (``nuisance``: noise level, speaking rate, transcript length). Folds are
group-aware on the config's ``groups`` column. The JSON holds no timings, so a rerun is
bit-identical; timings go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.experiments import probing_data as D
from jaxasr_interp.probes.nested import nested_cv

CONTROL = "shuffled labels (class counts kept), same nested procedure"


def _ci(values, cfg) -> dict:
    values = np.asarray(values, np.float64)
    return interval(bootstrap_ci(values, n_boot=cfg["n_boot"], seed=cfg["seed"]), len(values))


def summarise(res, names, cfg) -> dict:
    """Per-layer and best-layer accuracy, control and selectivity with intervals."""
    t = res.tested
    layers = []
    for i, name in enumerate(names):
        acc, ctl = res.correct[i, t], res.control_correct[i, t]
        layers.append(dict(layer=name, accuracy=_ci(acc, cfg), control=_ci(ctl, cfg),
                           selectivity=_ci(acc.astype(float) - ctl, cfg),
                           l2=[float(v) for v in res.l2_chosen[i]]))
    acc, ctl = res.best_correct[t], res.control_best_correct[t]
    best = dict(layers=[names[i] for i in res.best_layer], accuracy=_ci(acc, cfg), control=_ci(ctl, cfg),
                selectivity=_ci(acc.astype(float) - ctl, cfg),
                test_selected_accuracy=round(float(res.test_selected_best), 6))
    return dict(n=int(t.sum()), majority=round(res.majority, 6), best=best, layers=layers)


def _nested(x, labels, cfg, groups=None, outer=None) -> object:
    return nested_cv(x, labels, groups=groups, outer=outer, k=cfg["outer_folds"], inner_k=cfg["inner_folds"],
                     l2=cfg["l2"], seed=cfg["seed"])


def _groups(data, column):
    if column is None:
        return None
    values = [r[column] for r in data.rows]
    return np.asarray([v if v else f"item:{i}" for i, v in enumerate(values)])  # "" = its own group


def held_out(x, names, labels, classes, data, column, cfg) -> dict:
    """Train on every ``column`` group but one, test on it (engine: per held-out engine, the
    train side restricted to the test side's classes; speaker: every speaker a fold, pooled).
    Inner folds grouped by speaker."""
    from jaxasr_interp.data.splits import cross_engine_splits
    speakers = _groups(data, "speaker")
    groups = np.asarray([r[column] for r in data.rows])
    if column == "speaker":
        outer = np.unique(groups, return_inverse=True)[1]
        out = summarise(_nested(x, labels, cfg, speakers, outer), names, cfg)
        return dict(folds=int(outer.max() + 1), **out)
    result = {}
    for name, train, test in cross_engine_splits(groups, labels):
        keep = np.sort(np.concatenate([train, test]))
        shared, y = np.unique(labels[keep], return_inverse=True)
        outer = np.where(np.isin(keep, test), 0, -1)
        res = _nested(x[:, keep], y, cfg, speakers[keep], outer)
        result[name] = dict(classes=[classes[c] for c in shared], n_train=int(len(train)),
                            **summarise(res, names, cfg))
    return result


def _above_median(values) -> np.ndarray:
    """1 above the median, else 0 (ties: ``>=`` when ``>`` leaves a class nearly empty)."""
    y = (values > np.median(values)).astype(int)
    return y if min(y.sum(), (1 - y).sum()) >= 0.25 * len(y) else (values >= np.median(values)).astype(int)


def hallucination_labels(data, transcripts, spec, cfg, *, match: dict | None = None):
    """(keep indices, labels, stratum info) of the hard pool (module :mod:`.probing_data`).
    ``match`` (the config's ``length_matched``): the strata also split by the exact word count
    of the model's transcript, so both classes have the same length histogram too, with noise
    and rate bin edges ``snr_edges`` / ``rate_edges`` when it gives them."""
    wer = D.item_wer([r["transcript"] for r in data.rows], transcripts)
    outcome = D.outcome_labels(wer, spec["min_error_wer"], spec.get("max_correct_wer", 0.0))
    snr, speed = D.pool_levels(data.rows)
    noise_bins, rate_bins = D.NOISE_BINS, D.RATE_BINS
    if match is not None:
        noise_bins, rate_bins = match.get("snr_edges", noise_bins), match.get("rate_edges", rate_bins)
    words = None if match is None else D.word_counts(transcripts)
    keep = D.balanced_by_strata(outcome, D.strata(snr, speed, words, noise_bins=noise_bins, rate_bins=rate_bins),
                                cfg["seed"])
    pool = dict(pool=len(wer), max_correct_wer=spec.get("max_correct_wer", 0.0), min_error_wer=spec["min_error_wer"],
                median_wer=round(float(np.median(wer)), 6), correct=int((outcome == 0).sum()), error=int((outcome == 1).sum()),
                between=int((outcome == -1).sum()), kept=int(keep.size),
                matching=f"balanced by construction: equal numbers of correct and error items in every "
                         f"stratum of noise bins (snr_db edges {list(noise_bins)}, clean = {D.CLEAN_SNR:g}) "
                         f"x speaking-rate bins (espeak-ng wpm edges {list(rate_bins)})"
                         + ("" if match is None else " x the exact word count of the model's transcript"))
    return keep, outcome[keep], snr[keep], speed[keep], pool


def too_few(counts, cfg) -> str | None:
    """Why a labelling cannot be probed (a class with no more items than outer folds: the inner
    folds need a few of every class too), or None."""
    if min(counts) <= cfg["outer_folds"]:
        return f"too few items per class for nested {cfg['outer_folds']} x {cfg['inner_folds']}-fold"
    return None


def outcome_probe(x, names, groups, transcripts, data, spec, cfg, *, match: dict | None = None) -> dict:
    """The correct-vs-error probe of the hard pool, balanced on noise and rate (and on the
    transcript's word count with ``match``, :func:`hallucination_labels`), with its nuisance probes."""
    keep, labels, snr, speed, pool = hallucination_labels(data, transcripts, spec, cfg, match=match)
    x, groups, transcripts = x[:, keep], groups[keep], [transcripts[i] for i in keep]
    out = dict(pool=pool, classes=["correct", "error"], counts=np.bincount(labels, minlength=2).tolist())
    if too_few(out["counts"], cfg):
        return dict(out, skipped=too_few(out["counts"], cfg))
    out.update(summarise(_nested(x, labels, cfg, groups), names, cfg))
    out["nuisance"] = nuisance_probes(x, names, transcripts, snr, speed, labels, cfg)
    return out


def nuisance_probes(x, names, transcripts, snr, speed, labels, cfg) -> dict:
    """Probes for SNR, speaking rate and transcript length (the model's transcript's word
    count), each above / below its median, on the same features, and each class's mean of them
    (SNR: over the noisy items, with the share of clean items beside it)."""
    words = D.word_counts(transcripts).astype(float)
    out = {}
    for key, values in (("noise", snr), ("rate", speed), ("length", words)):
        y = _above_median(values)
        real = values < D.CLEAN_SNR if key == "noise" else np.ones(len(values), bool)  # clean: out of the SNR mean
        means = {str(c): round(float(values[(labels == c) & real].mean()), 6) for c in np.unique(labels)}
        out[key] = dict(class_means=means, **summarise(_nested(x, y, cfg), names, cfg))
    out["noise"]["class_clean_share"] = {str(c): round(float((snr[labels == c] >= D.CLEAN_SNR).mean()), 6)
                                         for c in np.unique(labels)}
    return out


def run_task(task: str, spec: dict, cfg: dict, model) -> dict:
    data = D.task_data(task, spec, cfg["work"], cfg["seed"])
    x, names, transcripts = D.task_features(data, Path(cfg["work"]) / task, model, cfg["chunk_size"],
                                            spec.get("items"))
    groups = _groups(data, spec.get("groups"))
    out = dict(target=spec["target"], groups=spec.get("groups"), dataset=dict(data.meta["params"], seed=data.meta["seed"]))
    if spec["builder"] == "hard-pool":
        out.update(outcome_probe(x, names, groups, transcripts, data, spec, cfg))
        if spec.get("length_matched"):
            match = spec["length_matched"] if isinstance(spec["length_matched"], dict) else {}
            out["length_matched"] = outcome_probe(x, names, groups, transcripts, data, spec, cfg, match=match)
        return out
    labels, classes = data.encoded(spec["target"])
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    if too_few(counts, cfg):
        return dict(out, classes=classes, counts=counts, skipped=too_few(counts, cfg))
    out.update(classes=classes, counts=counts, **summarise(_nested(x, labels, cfg, groups), names, cfg))
    for column in spec.get("held_out", ()):
        out.setdefault("held_out", {})[column] = held_out(x, names, labels, classes, data, column, cfg)
    return out


def run_probes(config: dict, model, out_dir, *, tasks=None, config_path: str | None = None) -> Path:
    """Every task of ``config`` (or ``tasks``) on ``model``; writes and returns
    ``out_dir/probes_<model>.json`` (module docstring). ``model``: a name or a loaded model.
    With ``tasks``, the other tasks of an existing results file are kept."""
    from jaxasr_interp.whisper.api import load
    loaded = load(model) if isinstance(model, str) else model
    model = model if isinstance(model, str) else loaded.source
    results = dict(experiment="probes", model=model, config=config_path,
                   command=f"python -m jaxasr_interp.experiments.probing --config {config_path} --model {model} "
                           f"--out {out_dir}",
                   settings=dict(outer_folds=config["outer_folds"], inner_folds=config["inner_folds"],
                                 l2=config["l2"], n_boot=config["n_boot"], seed=config["seed"], control=CONTROL,
                                 interval="95% percentile bootstrap over items"),
                   tasks={})
    for task in tasks or config["tasks"]:
        start = time.perf_counter()
        results["tasks"][task] = run_task(task, config["tasks"][task], config, loaded)
        print(f"{task}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"probes_{Path(model).name}.json"
    if tasks and path.is_file():  # a subset rerun keeps the file's other tasks, in config order
        kept = {**json.loads(path.read_text())["tasks"], **results["tasks"]}
        results["tasks"] = {t: kept[t] for t in config["tasks"] if t in kept}
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path
