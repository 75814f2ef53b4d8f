"""The contextual-bias experiment's report: ``contextual_bias.json``, ``contextual_bias.csv``
(family x layer x head x alpha), the figures and the one-line summary. The result dict is
:func:`.contextual_bias.run`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxasr_interp.experiments.contextual_bias_sweeps import best_patch
from jaxasr_interp.patching.sweeps import is_head_family

PAPER = ("large-v3: contextual error on 153/700 TTS sentences; patching encoder components with white "
         "noise raises acoustic accuracy: the bias lives in the encoder (secondary)")


def write_report(result: dict, out_dir) -> dict:
    """contextual_bias.json, contextual_bias.csv (family x layer x head x alpha),
    contextual_bias_layers.png and, with encoder heads, contextual_bias_heads.png."""
    import csv
    import json

    from jaxasr_interp.plots.patching import plot_head_heatmap, plot_layer_lines
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rate, alphas, n = result["flip_rate"], result["alphas"], result["n_items"]
    with open(out / "contextual_bias.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["family", "layer", "head", "alpha", "flipped_fraction", "n_items"])
        for fam, r in rate.items():
            for layer, patch, a in np.ndindex(r.shape):
                w.writerow([fam, layer, patch if is_head_family(fam) else "", alphas[fam][a], f"{r[layer, patch, a]:.4f}", n])
    per_layer = {f: 100 * r.max(axis=(1, 2)) for f, r in rate.items()}  # best head / alpha per layer
    summary = {k: v for k, v in result.items() if k != "flip_rate"}
    summary.update(per_layer_flipped_pct={f: v.tolist() for f, v in per_layer.items()}, paper=PAPER,
                   best={s: best_patch(rate, alphas, s) for s in ("encoder", "decoder")},
                   csv=str(out / "contextual_bias.csv"), plots=[str(out / "contextual_bias_layers.png")])
    title = (f"{result['model']}: {result['counts']['contextual']} contextual errors / {result['n_sentences']}; "
             f"{n} patched")
    plot_layer_lines(per_layer, path=out / "contextual_bias_layers.png", ylabel="% of errors flipped", ylim=(-3, 103),
                     title=f"{title}; white-noise patch, best alpha (and head) per layer")
    if "encoder.head" in rate:
        plot_head_heatmap(100 * rate["encoder.head"].max(2), path=out / "contextual_bias_heads.png", vmin=0,
                          vmax=100, label="% flipped", title=f"{title}; encoder heads")
        summary["plots"].append(str(out / "contextual_bias_heads.png"))
    (out / "contextual_bias.json").write_text(json.dumps(summary, indent=1, default=_plain) + "\n")
    return summary


def _plain(x):
    return x.tolist() if isinstance(x, np.ndarray) else float(x)


def format_summary(s: dict) -> str:
    c = s["counts"]
    parts = [f"contextual-bias [{s['model']}]: {c['contextual']}/{s['n_sentences']} contextual errors "
             f"({c['correct']} correct, {c['other']} other); {s['n_items']} patched"]
    for stack, b in s["best"].items():
        if b:
            head = f" head {b['head']}" if b["head"] is not None else ""
            beh = s["behaviour"].get(stack, {})
            parts.append(f"best {stack}: {b['family']} layer {b['layer']}{head} alpha {b['alpha']} flips "
                         f"{100 * b['teacher_forced_flip']:.0f}% teacher-forced, "
                         f"{100 * beh.get('flipped', float('nan')):.0f}% in greedy decoding")
    if "rank_correlation_all" in s:
        parts.append(f"attribution vs sweep Spearman {s['rank_correlation_all']:.2f}")
    return "; ".join(parts) + f"; paper: {PAPER}"
