"""SAE latents of Whisper's encoder as detectors and as handles (issue 17 item 6).

One documented command writes ``results/sae_study_<model>.json``::

    python -m jaxasr_interp.sae.study --model tiny.en --out results/

1. **Data** (:mod:`jaxasr_interp.data.builders`): ``build_speech`` (speech vs noise / tones /
   silence) and ``build_noise`` (clean vs noisy speech; its voices' gender and speaking rate
   are further targets of the probing issue), ``n`` items per class each.
2. **SAEs**: ``encoder.resid_post`` of two layers (the middle and the last) over both sets in
   one store (every audio frame), one TopK SAE per layer trained in one vmapped run; FVU / L0
   / dead fraction on the stored rows (in-sample).
3. **Detection** per target and layer: each latent's clip-level feature is its mean activation
   over the clip's frames (the probes' encoder pooling). Reported: the latents of largest
   ``|AUROC - 0.5|`` (AUROC with its bootstrap interval over items; chosen on the same items,
   so optimistic), the *cross-validated* best single latent (latent, threshold and sign chosen
   on the training folds, :mod:`.separation`) and the linear probe
   (:func:`jaxasr_interp.probes.sweep.probe_sweep`, L2 logistic regression) on the same pooled
   ``resid_post``, with the same folds and seeds. Intervals: 95% bootstrap over items; the
   probe's is the bootstrap of a proportion (its accuracy times n correct of n items), as the
   sweep returns pooled accuracies, not per-item predictions.
4. **Hallucinations** on the non-speech clips, per layer (:mod:`.steer`, greedy, plain
   argmax): the clean transcripts; ablating the ``top`` latents most active on non-speech
   (lowest AUROC for speech); steering with the ``top`` speech latents (highest AUROC), each
   at ``factor`` times its mean activation when firing on speech frames. Controls: the same
   with random latents of matched activation (for each chosen latent, one drawn from the 10
   firing, unchosen latents nearest in that activation statistic), ``controls`` draws. A
   transcript is scored twice: *non-empty* (any text) and *words* (non-empty after Whisper's
   English normaliser, which drops sound-event captions such as "(engine revving)"). Rates and
   paired differences against clean with bootstrap intervals over clips.
5. **Added targets** on the noise set, computed after parts 3 and 4 (so that the earlier
   targets' numbers are unchanged), each reported as in part 3: **accent** one-vs-rest
   (``accent:<class>`` per class present), plus a 4-way summary (``accent_4way``: the linear
   probe's 4-way accuracy against the cross-validated one-latent nearest-class-mean rule,
   :func:`.separation.cv_single_latent_multiclass`); **error**: the study model's own greedy
   transcript of each clip (``max_new_tokens`` as in part 4, recorded per clip with its WER in
   ``noise_transcripts``) scored against the reference after Whisper's English normaliser,
   positive WER > 0; skipped (with its counts) when either class has under 5 items. Noise and
   speaking rate are not balanced against error here, so the counts of error by noisy / clean
   and by rate are given, and per layer the AUROC for error of the ``noisy`` target's best
   latent (``noisy_latent``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxasr_interp.sae import hallucination as H
from jaxasr_interp.sae.study_report import markdown
from jaxasr_interp.sae.study_targets import (EXTRA_TARGETS, TARGETS, _accent, _error, _noise_transcripts,
                                             _targets)

COMMAND = "python -m jaxasr_interp.sae.study --model {model} --out results/"
DEFAULTS = dict(n=60, expansion=4, k=16, steps=600, batch=1024, top=4, ablate_top=32, controls=2,
                factors=(4.0, 16.0), max_new_tokens=32, seeds=(0, 1, 2), seed=0)


def _datasets(work: Path, n: int, seed: int, names) -> dict:
    from jaxasr_interp.data import read_dataset
    from jaxasr_interp.data.builders import build_noise, build_speech
    out = {}
    for name, build in (("speech", build_speech), ("noise", build_noise)):
        if name in names:
            if not (work / name / "labels.csv").exists():
                build(work / name, n, seed=seed)
            out[name] = read_dataset(work / name)
    return out


def _train(model, paths, work, layers, cfg, progress):
    from jaxasr_interp.sae import ActivationStore, SAEConfig, evaluate, train_saes, write_activations
    write_activations(model, paths, work / "acts", layers=layers, chunk_size=8, progress=progress)
    store = ActivationStore(work / "acts")
    d = model.dims.n_audio_state
    configs = [SAEConfig(d, d * cfg["expansion"], "topk", k=cfg["k"], layer=l, site="encoder.resid_post",
                         seed=cfg["seed"]) for l in store.layers]
    saes = train_saes(store.batches(cfg["batch"], seed=cfg["seed"], epochs=None), configs, steps=cfg["steps"],
                      layers=store.layers, progress=progress)
    quality = evaluate(saes, store.batches(4096, drop_last=False), layers=store.layers)
    return store, saes, quality


def _pooled(store) -> np.ndarray:
    """``[L, n_clips, D]``: each clip's mean ``resid_post`` over its frames (the probe features)."""
    from jaxasr_interp.sae.inspect import per_clip_sums
    n = len(store.meta["items"])
    sums, rows = 0.0, np.zeros(n)
    for i in range(store.n_shards):
        shard = store.shard(i)
        sums = sums + per_clip_sums(np.moveaxis(shard["acts"], 0, 1), shard["clip"], n)  # [n, L, D]
        rows += np.bincount(shard["clip"], minlength=n)
    return np.moveaxis(sums / rows[:, None, None], 1, 0).astype(np.float32)


def run(model, out, *, work=None, layers=None, targets=tuple(TARGETS) + EXTRA_TARGETS, progress: bool = True,
        **config) -> dict:
    """The whole study (module docstring) -> the results dict, also written to
    ``out/sae_study_<model>.json``; ``work`` holds the data and the store (reused on rerun);
    ``targets``: some of :data:`TARGETS` and :data:`EXTRA_TARGETS` (the speech set is always
    built: part 4 needs it)."""
    from jaxasr_interp.sae.inspect import clip_stats
    unknown = set(targets) - set(TARGETS) - set(EXTRA_TARGETS)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; known: {list(TARGETS) + list(EXTRA_TARGETS)}")
    cfg = {**DEFAULTS, **config}
    name = Path(model.source).name
    work = Path(work or f"runs/sae_study_{name}")
    n_layer = model.dims.n_audio_layer
    layers = tuple(layers) if layers is not None else (n_layer // 2 - 1, n_layer - 1)
    clock, cpu, times, cpus = time.time(), time.process_time(), {}, {}

    def lap(what):  # wall and CPU seconds of each part (CPU: every thread of this process)
        times[what] = round(time.time() - clock - sum(times.values()), 1)
        cpus[what] = round(time.process_time() - cpu - sum(cpus.values()), 1)

    data = _datasets(work, cfg["n"], cfg["seed"],
                     {"speech"} | {TARGETS[t][0] if t in TARGETS else "noise" for t in targets})
    offsets = {"speech": 0, "noise": len(data["speech"].rows)}
    lap("data")
    paths = [str(p) for d in data.values() for p in d.paths]
    store, saes, quality = _train(model, paths, work, layers, cfg, progress)
    lap("store_and_train")
    stats = [clip_stats(store, s) for s in saes]
    means = [st["sums"] / np.maximum(st["rows"], 1)[:, None] for st in stats]
    pooled = _pooled(store)
    found = _targets([t for t in targets if t in TARGETS], data, offsets, means, pooled, store.layers, cfg["seeds"])
    lap("detection")
    clean_texts, clean = H.clean_transcripts(model, data["speech"], cfg["max_new_tokens"])
    halluc = [H.edited_runs(model, s, st, data["speech"], cfg, clean_texts) for s, st in zip(saes, stats)]
    lap("hallucinations")
    # 5. the targets added later (accent, the model's own errors): after everything above, so
    # that its numbers are those of the runs before them
    extra, accent_4way, noise_texts = {}, None, None
    if "error" in targets:
        noise_texts = _noise_transcripts(model, data["noise"], cfg["max_new_tokens"])
    lap("noise_transcripts")
    if "accent" in targets:
        ovr, accent_4way = _accent(data["noise"], offsets["noise"], means, pooled, store.layers, cfg["seeds"])
        extra.update(ovr)
    if "error" in targets:
        noisy_labels, noisy_classes = data["noise"].encoded("noisy")
        extra["error"] = _error(noise_texts, offsets["noise"], means, pooled, store.layers, cfg["seeds"],
                                (noisy_labels == noisy_classes.index("noisy")).astype(np.int32))
    found.update(extra)
    lap("detection_added")
    result = dict(experiment="sae_study", model=name, command=COMMAND.format(model=model.source),
                  config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                  layers=list(store.layers),
                  n_clips=len(store.meta["items"]), n_rows=store.n_rows,
                  saes=[dict(layer=s.config.layer, d_sae=s.config.d_sae, k=s.config.k, fvu=round(q["fvu"], 4),
                             l0=round(q["l0"], 2), dead=round(q["dead"], 4)) for s, q in zip(saes, quality)],
                  targets=found, accent_4way=accent_4way, noise_transcripts=noise_texts,
                  hallucination=dict(clean=clean, n=len(clean_texts), layers=halluc),
                  seconds=dict(times, total=round(time.time() - clock, 1)),
                  cpu_seconds=dict(cpus, total=round(time.process_time() - cpu, 1)))
    path = Path(out) / f"sae_study_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv=None) -> dict:
    import jaxasr_interp as jai
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", default="results/")
    parser.add_argument("--work", default=None, help="data and store (default runs/sae_study_<model>)")
    for key in ("n", "expansion", "k", "steps", "batch", "top", "ablate_top", "controls", "max_new_tokens"):
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=DEFAULTS[key])
    parser.add_argument("--layers", default=None, help="comma-separated encoder layers (default: middle, last)")
    parser.add_argument("--markdown", action="store_true", help="print the tables of an existing results file")
    args = parser.parse_args(argv)
    path = Path(args.out) / f"sae_study_{Path(args.model).name}.json"
    if args.markdown:
        result = json.loads(path.read_text())
    else:
        config = {k: getattr(args, k) for k in ("n", "expansion", "k", "steps", "batch", "top", "ablate_top",
                                                "controls", "max_new_tokens")}
        layers = None if args.layers is None else [int(v) for v in args.layers.split(",")]
        result = run(jai.load(args.model), args.out, work=args.work, layers=layers, **config)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
