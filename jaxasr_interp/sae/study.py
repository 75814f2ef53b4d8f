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

from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.sae import hallucination as H
from jaxasr_interp.sae import separation as S

COMMAND = "python -m jaxasr_interp.sae.study --model {model} --out results/"
TARGETS = {"speech": ("speech", "speech"), "noisy": ("noise", "noisy"), "gender": ("noise", "female"),
           "rate": ("noise", "fast")}  # target -> (dataset, positive class)
EXTRA_TARGETS = ("accent", "error")  # on the noise set, computed after the rest (module docstring, 5.)
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


def _binary(dataset, positive, names, y, idx, means, pooled, layers, seeds) -> dict:
    """One binary target (positive ``y == 1``) on the clips ``idx`` of the store: per layer the
    latents' detection and the linear probe on the same folds and seeds; skipped under 2 items
    in a class."""
    from jaxasr_interp.probes.sweep import probe_sweep
    folds = min(5, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return dict(dataset=dataset, positive=positive, n=len(y), counts=np.bincount(y, minlength=2).tolist(),
                    skipped="under 2 items in a class")
    probe = probe_sweep(pooled[:, idx], y[None], k=folds, seeds=seeds).summary()
    rows = []
    for li, layer in enumerate(layers):
        p = probe[li]
        rows.append(dict(layer=layer, **_detection(means[li][idx], y, seeds, names, folds),
                         probe=dict(accuracy=_proportion_ci(p["accuracy"], len(y)),
                                    control=round(p["control_accuracy"], 4), l2=p["l2"])))
    return dict(dataset=dataset, positive=positive, n=len(y), counts=np.bincount(y).tolist(),
                folds=folds, chance=round(float(max(y.mean(), 1 - y.mean())), 4), layers=rows)


def _targets(names, data, offsets, means, pooled, layers, seeds) -> dict:
    out = {}
    for name in names:
        dataset, positive = TARGETS[name]
        labels, classes = data[dataset].encoded(name if dataset == "noise" else "speech")
        y = (labels == classes.index(positive)).astype(np.int32)
        idx = offsets[dataset] + np.arange(len(y))
        out[name] = _binary(dataset, positive, ("/".join(c for c in classes if c != positive), positive), y, idx,
                            means, pooled, layers, seeds)
    return out


def _accent(noise, offset, means, pooled, layers, seeds) -> tuple[dict, dict]:
    """``({"accent:<class>": one-vs-rest target}, 4-way summary)`` on the noise set, one
    one-vs-rest target per accent class present (the classes' order of the dataset)."""
    from jaxasr_interp.probes.sweep import probe_sweep
    labels, classes = noise.encoded("accent")
    idx = offset + np.arange(len(labels))
    present = [c for i, c in enumerate(classes) if (labels == i).any()]
    out = {}
    for c in present:
        y = (labels == classes.index(c)).astype(np.int32)
        out[f"accent:{c}"] = _binary("noise", c, ("other", c), y, idx, means, pooled, layers, seeds)
    y = np.searchsorted([classes.index(c) for c in present], labels).astype(np.int32)  # present classes 0..C-1
    counts = np.bincount(y, minlength=len(present))
    multi = dict(dataset="noise", classes=present, n=len(y), counts=counts.tolist(),
                 chance=round(float(counts.max() / len(y)), 4))
    folds = min(5, int(counts.min()))
    if len(present) < 2 or folds < 2:
        return out, dict(multi, skipped="under 2 classes, or under 2 items in a class")
    probe = probe_sweep(pooled[:, idx], y[None], k=folds, seeds=seeds).summary()
    rows = []
    for li, layer in enumerate(layers):
        correct, chosen = S.cv_single_latent_multiclass(means[li][idx], y, k=folds, seeds=seeds)
        rows.append(dict(layer=layer,
                         cv_single_latent=dict(accuracy=interval(bootstrap_ci(correct), len(y)),
                                               chosen=np.bincount(chosen).argmax().item(),
                                               chosen_share=float(np.bincount(chosen).max() / len(chosen))),
                         probe=dict(accuracy=_proportion_ci(probe[li]["accuracy"], len(y)),
                                    balanced_accuracy=round(probe[li]["balanced_accuracy"], 4),
                                    control=round(probe[li]["control_accuracy"], 4), l2=probe[li]["l2"])))
    return out, dict(multi, folds=folds, layers=rows)


MIN_ERROR_CLASS = 5  # the error target is skipped when "correct" or "error" has fewer items


def _transcribe(model, paths, max_new_tokens: int) -> list[str]:
    """The study model's greedy transcripts (``jai.transcribe``, batched); a seam for tests."""
    from jaxasr_interp.whisper.api import transcribe
    return transcribe(model, paths, max_new_tokens=max_new_tokens)


def _wer(reference: str, hypothesis: str) -> float:
    """WER after Whisper's English normaliser (:mod:`jaxasr_interp.whisper.text_metrics`)."""
    from jaxasr_interp.whisper.text_metrics import normalize, rate, word_errors
    return rate(*word_errors(normalize(reference, "english"), normalize(hypothesis, "english")))


def _noise_transcripts(model, noise, max_new_tokens: int) -> dict:
    """Per noise-set clip: the model's greedy transcript, its WER against the reference, and the
    clip's noisy and rate labels (the error target's confounds)."""
    texts = _transcribe(model, [str(p) for p in noise.paths], max_new_tokens)
    items = [dict(path=r["path"], reference=r["transcript"], text=t.strip(), wer=round(_wer(r["transcript"], t), 4),
                  noisy=r["noisy"], rate=r["rate"]) for r, t in zip(noise.rows, texts)]
    return dict(normaliser="english", max_new_tokens=max_new_tokens, items=items)


def _error(transcripts, offset, means, pooled, layers, seeds, noisy_y) -> dict:
    """The error target (positive: WER > 0) on the noise set; beside it, per layer, how well
    the ``noisy`` target's best latent (largest ``|AUROC - 0.5|`` for noisy) ranks error."""
    items = transcripts["items"]
    y = np.asarray([it["wer"] > 0 for it in items], np.int32)
    idx = offset + np.arange(len(y))
    by = {key: {v: dict(correct=sum(1 for it, e in zip(items, y) if it[key] == v and not e),
                        error=sum(1 for it, e in zip(items, y) if it[key] == v and e))
                for v in sorted({it[key] for it in items})} for key in ("noisy", "rate")}
    counts = np.bincount(y, minlength=2)
    base = dict(dataset="noise", positive="error", n=len(y), counts=counts.tolist(),
                by_noisy=by["noisy"], by_rate=by["rate"])
    if counts.min() < MIN_ERROR_CLASS:
        return dict(base, skipped=f"under {MIN_ERROR_CLASS} items in a class (correct {counts[0]}, error {counts[1]})")
    out = {**base, **_binary("noise", "error", ("correct", "error"), y, idx, means, pooled, layers, seeds)}
    for li, row in enumerate(out["layers"]):
        x = means[li][idx]
        au = S.auroc(x, noisy_y)
        j = int(np.argsort(-np.abs(au - 0.5), kind="stable")[0])  # the noisy target's best latent
        up = bool(S.auroc(x[:, j:j + 1], y)[0] >= 0.5)
        row["noisy_latent"] = dict(latent=j, fires_for="error" if up else "correct",
                                   auroc=_auroc_ci(x[:, j], y if up else 1 - y))
    return out


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


def _added_markdown(result: dict) -> list[str]:
    """The multiclass accent table and the error target's confounds (absent from older files;
    every number is a value of the file, as tests/test_docs_numbers.py checks)."""
    lines = []
    multi = result.get("accent_4way")
    if multi:
        lines += ["", "| accent, multiclass (classes, n) | layer | best single latent (nearest class mean), "
                  "cross-validated: accuracy % | linear probe: accuracy % (balanced; shuffled control) | chance % |",
                  "|---|---|---|---|---|"]
        head = f"| accent ({'/'.join(multi['classes'])}, {multi['n']}) |"
        if "skipped" in multi:
            lines.append(f"{head} - | skipped: {multi['skipped']} | | {100 * multi['chance']:.1f} |")
        for r in multi.get("layers", []):
            p = r["probe"]
            lines.append(f"{head} {r['layer']} | {_ci(r['cv_single_latent']['accuracy'])} | "
                         f"{_ci(p['accuracy'])} ({100 * p['balanced_accuracy']:.1f}; {100 * p['control']:.1f}) | "
                         f"{100 * multi['chance']:.1f} |")
    error = result["targets"].get("error")
    if error:
        def split(by):
            return "; ".join(f"{v}: {c['error']} error, {c['correct']} correct" for v, c in by.items())
        lines += ["", f"Error target: {result['model']}'s own greedy transcripts of the {error['n']} noise-set "
                  f"clips, error (WER > 0) on {error['counts'][1]} of {error['n']}; by noise ({split(error['by_noisy'])})"
                  f", by rate ({split(error['by_rate'])})."]
        for r in error.get("layers", []):
            c = r["noisy_latent"]
            lines[-1] += (f" Layer {r['layer']}: the noisy target's best latent #{c['latent']} ranks error at AUROC "
                          f"{_ci(c['auroc'], False)} (fires for {c['fires_for']}).")
    return lines


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
        if "skipped" in t:
            lines.append(f"| {name} ({t['positive']}, {t['n']}) | - | skipped: {t['skipped']} | | | |")
        for r in t.get("layers", []):
            lines.append(f"| {name} ({t['positive']}, {t['n']}) | {r['layer']} | #{r['best_auroc']['latent']} "
                         f"(fires for {r['best_auroc']['fires_for']}): "
                         f"{_ci(r['best_auroc']['auroc'], False)} | {_ci(r['cv_single_latent']['accuracy'])} | "
                         f"{_ci(r['probe']['accuracy'])} ({100 * r['probe']['control']:.1f}) | "
                         f"{100 * t['chance']:.1f} |")
    lines += _added_markdown(result)
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
