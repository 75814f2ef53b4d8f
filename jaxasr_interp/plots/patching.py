"""Matplotlib figures for activation patching (no pyplot: each function builds a ``Figure``,
returns it, and writes a PNG when ``path`` is given).

- :func:`plot_head_heatmap`: layer x head grid of one value per head (e.g. % resolved), the
  value written in each cell and the best cell outlined.
- :func:`plot_alpha_curves`: one curve per component of a value against alpha.
- :func:`plot_layer_lines`: one line per component family of a value against layer (encoder and
  decoder families on separate panels when both are present).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from jaxasr_interp.plots.figure import save_figure


def plot_head_heatmap(values, *, path=None, title: str = "", label: str = "",
                      vmin: float | None = None, vmax: float | None = None, fmt: str = "{:.0f}") -> Figure:
    """``values`` [L, H]: rows are layers (0 at the bottom), columns heads."""
    values = np.asarray(values, float)
    if values.ndim != 2:
        raise ValueError(f"plot_head_heatmap needs [layers, heads], got shape {values.shape}")
    n_l, n_h = values.shape
    fig = Figure(figsize=(max(4.0, 0.6 * n_h + 2.0), max(3.0, 0.45 * n_l + 1.6)))
    ax = fig.add_subplot()
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    hi = np.nanmax(values) if np.isfinite(values).any() else 0
    for layer in range(n_l):
        for head in range(n_h):
            v = values[layer, head]
            ax.text(head, layer, fmt.format(v), ha="center", va="center", fontsize=7,
                    color="black" if v > (vmin or 0) + 0.6 * ((vmax or hi or 1) - (vmin or 0)) else "white")
    if np.isfinite(values).any():
        l, h = np.unravel_index(int(np.nanargmax(values)), values.shape)
        ax.add_patch(Rectangle((h - 0.5, l - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    ax.set_xticks(range(n_h))
    ax.set_yticks(range(n_l))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=label)
    return save_figure(fig, path, dpi=100)


def plot_alpha_curves(alphas, curves: dict, *, path=None, title: str = "", ylabel: str = "") -> Figure:
    """``curves`` {label: [A] values}: one line each against ``alphas``."""
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    for label, values in curves.items():
        ax.plot(alphas, np.asarray(values, float), marker="o", label=label)
    ax.set_xticks(list(alphas))
    ax.set_xlabel("alpha (0 = clean, 1 = reference)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return save_figure(fig, path, dpi=100)


def plot_layer_lines(families: dict, *, path=None, title: str = "", ylabel: str = "", ylim=None) -> Figure:
    """``families`` {family name: [L] values}; encoder.* and decoder.* on separate panels."""
    stacks = [s for s in ("encoder", "decoder") if any(f.startswith(s) for f in families)]
    fig = Figure(figsize=(5.0 * max(1, len(stacks)), 3.6))
    for i, stack in enumerate(stacks):
        ax = fig.add_subplot(1, len(stacks), i + 1)
        for name, values in families.items():
            if name.startswith(stack):
                values = np.asarray(values, float)
                ax.plot(np.arange(len(values)), values, marker="o", label=name.split(".", 1)[1])
        n = max(len(v) for f, v in families.items() if f.startswith(stack))
        ax.set_xticks(range(n))
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xlabel(f"{stack} layer")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, dpi=100)
