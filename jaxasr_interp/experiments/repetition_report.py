"""The repetition experiment's report: ``repetition.json`` (summary + per-item texts),
``repetition.csv`` (one row per patch x alpha), the figures, and the one-line summary.
The result dict is :func:`.repetition.run`'s."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PAPER = dict(layer="cross-attention of decoder layer 23 resolves 76%", head="head 13 of layer 18: 78.1%",
             pair="both together: 89%", model="large-v3 (secondary)")


def write_report(result: dict, out_dir) -> dict:
    """repetition.json (summary + per-item texts), repetition.csv (one row per patch x alpha),
    repetition_heads.png (layer x head, best alpha) and repetition_alpha.png -> the summary.
    With no looping item (the user's files, see :func:`run`): repetition.json only."""
    import json

    from jaxasr_interp.plots.patching import plot_alpha_curves, plot_head_heatmap, plot_layer_lines
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not result["n_items"]:
        summary = dict(result, csv=None, plots=[])
        (out / "repetition.json").write_text(json.dumps(summary, indent=1) + "\n")
        return summary
    alphas, lr, hr, pr = result["alphas"], result["layer_rate"], result["head_rate"], result["pair_rate"]
    (bl, (hl, hh)) = result["best_layer"], result["best_head"]
    summary = {k: v for k, v in result.items() if k not in ("layer_rate", "head_rate", "pair_rate")}
    summary.update(
        best_layer_resolved=float(lr[bl].max()), best_layer_alpha=alphas[int(np.argmax(lr[bl]))],
        best_head_resolved=float(hr[hl, hh].max()), best_head_alpha=alphas[int(np.argmax(hr[hl, hh]))],
        pair_resolved=float(pr.max()), pair_alpha=alphas[int(np.argmax(pr))], paper=PAPER,
        layer_rate=lr.tolist(), head_rate=hr.tolist(), pair_rate=pr.tolist(),
        csv=str(out / "repetition.csv"), plots=[str(out / "repetition_heads.png"), str(out / "repetition_alpha.png")])
    _write_csv(out / "repetition.csv", result)
    (out / "repetition.json").write_text(json.dumps(summary, indent=1) + "\n")
    name = f"{result['model']}: {result['n_items']} looping items"
    plot_head_heatmap(100 * hr.max(2), path=out / "repetition_heads.png", vmin=0, vmax=100, label="% resolved",
                      title=f"{name}; % of loops resolved by patching one cross-attention head (best alpha)")
    if len(alphas) > 1:
        curves = {f"layer {layer}": 100 * lr[layer] for layer in range(lr.shape[0])}
        curves[f"head {hl}.{hh}"] = 100 * hr[hl, hh]
        curves[f"layer {bl} + head {hl}.{hh}"] = 100 * pr
        plot_alpha_curves(alphas, curves, path=out / "repetition_alpha.png", ylabel="% of loops resolved",
                          title=f"{name}; cross-attention output per layer, best head, both")
    else:  # one alpha: per-layer lines instead of degenerate alpha curves
        lines = {"decoder.cross_attn_out: resolved": 100 * lr[:, 0],
                 "decoder.best head: resolved": 100 * hr[..., 0].max(1)}
        if "layer_loop_removed" in result:
            lines["decoder.cross_attn_out: loop removed"] = 100 * np.asarray(result["layer_loop_removed"])[:, 0]
            lines["decoder.best head: loop removed"] = 100 * np.asarray(result["head_loop_removed"])[..., 0].max(1)
        plot_layer_lines(lines, path=out / "repetition_alpha.png", ylabel="% of loops", ylim=(-3, 103),
                         title=f"{name}; alpha {alphas[0]}; pair layer {bl} + head {hl}.{hh}: {100 * pr[0]:.0f}%")
    return summary


def _write_csv(path, result: dict) -> None:
    import csv
    alphas, lr, hr, pr, n = (result[k] for k in ("alphas", "layer_rate", "head_rate", "pair_rate", "n_items"))
    (bl, (hl, hh)) = result["best_layer"], result["best_head"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["component", "layer", "head", "alpha", "resolved_fraction", "n_items"])
        for a, alpha in enumerate(alphas):
            for layer in range(lr.shape[0]):
                w.writerow(["cross_attn_out", layer, "", alpha, f"{lr[layer, a]:.4f}", n])
                for head in range(hr.shape[1]):
                    w.writerow(["cross_attn.z head", layer, head, alpha, f"{hr[layer, head, a]:.4f}", n])
            w.writerow([f"layer {bl} + head {hl}.{hh}", bl, hh, alpha, f"{pr[a]:.4f}", n])


def format_summary(s: dict) -> str:
    """One line; for the user's files, a line per file first (loop found / no loop found)."""
    files = ([f"loop found: {it['source']}\t{it['clean']}" for it in s.get("items", [])]
             + [f"no loop found: {r['audio']}\t{r['transcript']}" for r in s["no_loop"]] if "no_loop" in s else [])
    if not s["n_items"]:
        return "\n".join(files + [f"repetition [{s['model']}]: {s['message']}"])
    return "\n".join(files + [_summary_line(s)])


def _summary_line(s: dict) -> str:
    hl, hh = s["best_head"]
    return (f"repetition [{s['model']}]: {s['n_loops']} of {s['n_pool']} candidates loop, {s['n_items']} patched; "
            f"best layer {s['best_layer']} cross-attention resolves {100 * s['best_layer_resolved']:.1f}% "
            f"(alpha {s['best_layer_alpha']}), best head {hl}.{hh} {100 * s['best_head_resolved']:.1f}% "
            f"(alpha {s['best_head_alpha']}), both {100 * s['pair_resolved']:.1f}% (alpha {s['pair_alpha']}); "
            f"loop removed (rest not required intact): best layer {100 * np.max(s['layer_loop_removed']):.1f}%, "
            f"best head {100 * np.max(s['head_loop_removed']):.1f}%; "
            f"paper ({PAPER['model']}): {PAPER['layer']}, {PAPER['head']}, {PAPER['pair']}")
