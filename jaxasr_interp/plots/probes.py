"""Figure of a per-layer probe result: encoder and decoder accuracy curves, the shuffled-label
control of each, and the chance line (majority-class rate). Takes the rows written by
:func:`jaxasr_interp.experiments.probing.probe_rows`; returns the saved path."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def plot_probe_layers(rows: list[dict], path, *, title: str) -> Path:
    # a Figure built directly, no pyplot: no backend switch, inline plots in notebooks stay on
    fig = Figure(figsize=(6.4, 3.8), dpi=120)
    ax = fig.add_subplot()
    for stack, color in (("encoder", "tab:blue"), ("decoder", "tab:orange")):
        mine = [r for r in rows if r["stack"] == stack]
        if not mine:
            continue
        layers = [r["layer"] for r in mine]
        ax.plot(layers, [100 * r["accuracy"] for r in mine], "o-", color=color, label=f"{stack} probe")
        ax.plot(layers, [100 * r["control_accuracy"] for r in mine], "x--", color=color, alpha=0.5,
                label=f"{stack} shuffled-label control")
    ax.axhline(100 * rows[0]["chance"], color="gray", linestyle=":", label="chance (majority class)")
    ax.set_xlabel("layer")
    ax.set_ylabel("cross-validated accuracy (%)")
    ax.set_ylim(0, 102)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    return path
