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
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.sae import hallucination as H
from jaxasr_interp.sae import separation as S

COMMAND = "python -m jaxasr_interp.sae.study --model {model} --out results/"
TARGETS = {"speech": ("speech", "speech"), "noisy": ("noise", "noisy"), "gender": ("noise", "female"),
           "rate": ("noise", "fast")}  # target -> (dataset, positive class)
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


def _auroc_ci(x, y) -> dict:
    def stat(a):
        return S.auroc(a[:, :1], a[:, 1])[0] if 0 < a[:, 1].sum() < len(a) else np.nan
    return interval(bootstrap_ci(np.column_stack([x, y]), stat), len(y))


def _proportion_ci(accuracy: float, n: int) -> dict:
    hits = int(round(accuracy * n))
    return interval(bootstrap_ci(np.r_[np.ones(hits), np.zeros(n - hits)]), n)


def _detection(means, y, seeds, names, folds, n_list: int = 5) -> dict:
    """Top latents by ``|AUROC - 0.5|``, the best one's AUROC for the class it fires on (with
    its interval), and the cross-validated best single latent's accuracy."""
    au = S.auroc(means, y)
    order = np.argsort(-np.abs(au - 0.5), kind="stable")
    correct, chosen = S.cv_single_latent(means, y, k=folds, seeds=seeds)
    best = int(order[0])
    up = bool(au[best] >= 0.5)
    return dict(top_latents=[dict(latent=int(j), auroc=round(float(au[j]), 4)) for j in order[:n_list]],
                best_auroc=dict(latent=best, fires_for=names[int(up)],
                                auroc=_auroc_ci(means[:, best], y if up else 1 - y)),
                cv_single_latent=dict(accuracy=interval(bootstrap_ci(correct), len(y)),
                                      chosen=np.bincount(chosen).argmax().item(),
                                      chosen_share=float(np.bincount(chosen).max() / len(chosen))))


def _targets(names, data, offsets, means, pooled, layers, seeds) -> dict:
    from jaxasr_interp.probes.sweep import probe_sweep
    out = {}
    for name in names:
        dataset, positive = TARGETS[name]
        labels, classes = data[dataset].encoded(name if dataset == "noise" else "speech")
        y = (labels == classes.index(positive)).astype(np.int32)
        names = ("/".join(c for c in classes if c != positive), positive)
        idx, folds = offsets[dataset] + np.arange(len(y)), min(5, int(np.bincount(y, minlength=2).min()))
        if folds < 2:
            out[name] = dict(dataset=dataset, positive=positive, n=len(y), skipped="under 2 items in a class")
            continue
        probe = probe_sweep(pooled[:, idx], y[None], k=folds, seeds=seeds).summary()
        rows = []
        for li, layer in enumerate(layers):
            p = probe[li]
            rows.append(dict(layer=layer, **_detection(means[li][idx], y, seeds, names, folds),
                             probe=dict(accuracy=_proportion_ci(p["accuracy"], len(y)),
                                        control=round(p["control_accuracy"], 4), l2=p["l2"])))
        out[name] = dict(dataset=dataset, positive=positive, n=len(y), counts=np.bincount(y).tolist(),
                         folds=folds, chance=round(float(max(y.mean(), 1 - y.mean())), 4), layers=rows)
    return out


def run(model, out, *, work=None, layers=None, targets=tuple(TARGETS), progress: bool = True, **config) -> dict:
    """The whole study (module docstring) -> the results dict, also written to
    ``out/sae_study_<model>.json``; ``work`` holds the data and the store (reused on rerun);
    ``targets``: some of :data:`TARGETS` (the speech set is always built: part 4 needs it)."""
    from jaxasr_interp.sae.inspect import clip_stats
    cfg = {**DEFAULTS, **config}
    name = Path(model.source).name
    work = Path(work or f"runs/sae_study_{name}")
    n_layer = model.dims.n_audio_layer
    layers = tuple(layers) if layers is not None else (n_layer // 2 - 1, n_layer - 1)
    clock, cpu, times, cpus = time.time(), time.process_time(), {}, {}

    def lap(what):  # wall and CPU seconds of each part (CPU: every thread of this process)
        times[what] = round(time.time() - clock - sum(times.values()), 1)
        cpus[what] = round(time.process_time() - cpu - sum(cpus.values()), 1)

    data = _datasets(work, cfg["n"], cfg["seed"], {"speech"} | {TARGETS[t][0] for t in targets})
    offsets = {"speech": 0, "noise": len(data["speech"].rows)}
    lap("data")
    paths = [str(p) for d in data.values() for p in d.paths]
    store, saes, quality = _train(model, paths, work, layers, cfg, progress)
    lap("store_and_train")
    stats = [clip_stats(store, s) for s in saes]
    means = [st["sums"] / np.maximum(st["rows"], 1)[:, None] for st in stats]
    found = _targets(targets, data, offsets, means, _pooled(store), store.layers, cfg["seeds"])
    lap("detection")
    clean_texts, clean = H.clean_transcripts(model, data["speech"], cfg["max_new_tokens"])
    halluc = [H.edited_runs(model, s, st, data["speech"], cfg, clean_texts) for s, st in zip(saes, stats)]
    lap("hallucinations")
    result = dict(experiment="sae_study", model=name, command=COMMAND.format(model=model.source),
                  config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                  layers=list(store.layers),
                  n_clips=len(store.meta["items"]), n_rows=store.n_rows,
                  saes=[dict(layer=s.config.layer, d_sae=s.config.d_sae, k=s.config.k, fvu=round(q["fvu"], 4),
                             l0=round(q["l0"], 2), dead=round(q["dead"], 4)) for s, q in zip(saes, quality)],
                  targets=found, hallucination=dict(clean=clean, n=len(clean_texts), layers=halluc),
                  seconds=dict(times, total=round(time.time() - clock, 1)),
                  cpu_seconds=dict(cpus, total=round(time.process_time() - cpu, 1)))
    path = Path(out) / f"sae_study_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _ci(c: dict, pct: bool = True) -> str:
    if pct:
        return f"{100 * c['value']:.1f} [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"
    return f"{c['value']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def _total(cpu) -> float:
    return cpu["total"] if isinstance(cpu, dict) else cpu


def _parts(result) -> str:
    cpu = result["cpu_seconds"] if isinstance(result["cpu_seconds"], dict) else {}
    return ", ".join(f"{k} {v:.0f} / {cpu.get(k, float('nan')):.0f} s" for k, v in result["seconds"].items()
                     if k != "total")


def markdown(result: dict) -> str:
    """The study's section of docs/sae.md, from one results file (accuracies and rates in %)."""
    h = result["hallucination"]
    lines = [f"**{result['model']}** (`{result['command']}`): {result['n_clips']} clips, {result['n_rows']} "
             f"frames of `encoder.resid_post`; {result['seconds']['total']:.0f} s wall, "
             f"{_total(result['cpu_seconds']):.0f} s CPU "
             f"(wall / CPU: {_parts(result)}).", "",
             "| layer | latents | k | FVU (in-sample) | L0 | dead |", "|---|---|---|---|---|---|"]
    lines += [f"| {s['layer']} | {s['d_sae']} | {s['k']} | {s['fvu']:.3f} | {s['l0']:.1f} | "
              f"{100 * s['dead']:.1f}% |" for s in result["saes"]]
    lines += ["", "| target (positive, n) | layer | best latent: AUROC (in-sample) | best single latent, "
              "cross-validated: accuracy % | linear probe: accuracy % (shuffled control) | chance % |",
              "|---|---|---|---|---|---|"]
    for name, t in result["targets"].items():
        for r in t.get("layers", []):
            lines.append(f"| {name} ({t['positive']}, {t['n']}) | {r['layer']} | #{r['best_auroc']['latent']} "
                         f"(fires for {r['best_auroc']['fires_for']}): "
                         f"{_ci(r['best_auroc']['auroc'], False)} | {_ci(r['cv_single_latent']['accuracy'])} | "
                         f"{_ci(r['probe']['accuracy'])} ({100 * r['probe']['control']:.1f}) | "
                         f"{100 * t['chance']:.1f} |")
    lines += ["", f"Hallucinations on the {h['n']} non-speech clips (greedy, at most "
              f"{result['config']['max_new_tokens']} tokens). Clean: non-empty {_ci(h['clean']['non_empty'])}%, "
              f"with words {_ci(h['clean']['words'])}%.", "",
              "| layer | condition | non-empty % | minus clean | with words % | minus clean | changed % |",
              "|---|---|---|---|---|---|---|"]
    for layer in h["layers"]:
        for cname, c in layer["conditions"].items():
            lines.append(f"| {layer['layer']} | {cname} | {_ci(c['non_empty']['rate'])} | "
                         f"{_ci(c['non_empty']['minus_clean'])} | {_ci(c['words']['rate'])} | "
                         f"{_ci(c['words']['minus_clean'])} | {_ci(c['changed'])} |")
    for layer in h["layers"]:
        lines.append(f"\nLayer {layer['layer']}: steered speech latents {layer['speech_latents']} (AUROC for "
                     f"speech {layer['speech_auroc']}; alpha per factor {layer['steer_alpha']}), controls "
                     f"{layer['control_steer']} (alphas {layer['control_alpha']}); ablated the "
                     f"{len(layer['nonspeech_latents'])} latents of lowest AUROC (from "
                     f"{min(layer['nonspeech_auroc']):.2f} to {max(layer['nonspeech_auroc']):.2f}; mean activation "
                     f"on non-speech {layer['nonspeech_mean_avg']:.3f}), controls of mean activation "
                     f"{', '.join(f'{m:.3f}' for m in layer['control_ablate_mean_avg'])}.")
    return "\n".join(lines)


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
