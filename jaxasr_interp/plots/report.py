"""Figures of the one-page report (:mod:`.report`): mel, cross-attention alignment, head patching.

Like :mod:`.plots`, every function builds a ``matplotlib.figure.Figure`` directly (no pyplot
state, no GUI backend), returns it, and writes a PNG when ``path`` is given.

- :func:`plot_mel`: the log-mel spectrogram alone, time in seconds.
- :func:`plot_alignment`: decoder tokens x audio time (one row per transcript token, the
  cross-attention its query position pays to each encoder position, 20 ms each), with the mel
  spectrogram above on the same time axis and each row's peak marked.
- :func:`plot_head_patching`: decoder layer x head heatmap of a patching metric (e.g. the mean
  change of the clean tokens' logits when that head is patched towards a reference run),
  diverging colours centred on zero, each cell labelled with its value.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from jaxasr_interp.plots.figure import save_figure
from jaxasr_interp.plots.lens import HOP_SECONDS, draw_mel, figure_with_mel

# One encoder position covers two mel frames (the second conv has stride 2): 20 ms.
AUDIO_POSITION_SECONDS = 2 * HOP_SECONDS


def plot_mel(mel, seconds: float | None = None, *, path=None, title: str | None = None) -> Figure:
    """The log-mel spectrogram [n_mels, frames], trimmed to ``seconds`` of audio."""
    fig = Figure(figsize=(10, 2.6))
    ax = fig.add_subplot()
    draw_mel(ax, mel, seconds)
    ax.set_xlabel("time (s)")
    ax.set_title(title or "log-mel spectrogram", fontsize=10)
    return save_figure(fig, path)


def plot_alignment(alignment, mel, seconds: float, labels, *, path=None,
                   title: str | None = None) -> Figure:
    """``alignment`` [tokens, audio positions] under the mel; ``labels``: one string per row."""
    alignment = np.asarray(alignment, np.float32)
    n_rows = alignment.shape[0]
    if len(labels) != n_rows:
        raise ValueError(f"{len(labels)} labels for {n_rows} alignment rows")
    # Only the positions that hold audio: the rest of the 30 s window is padding.
    n_pos = min(alignment.shape[1], int(np.ceil(seconds / AUDIO_POSITION_SECONDS)))
    shown = alignment[:, :n_pos]
    fig, _, (ax,) = figure_with_mel(mel, 1, seconds, figsize=(11, 2.2 + 0.22 * n_rows),
                                    height_ratios=[1.4, max(2.0, 0.22 * n_rows)])
    # Rows differ a lot in total attention; scale each to its own peak so every token shows.
    peak = np.maximum(shown.max(axis=1, keepdims=True), 1e-12)
    ax.imshow(shown / peak, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1,
              extent=(0, n_pos * AUDIO_POSITION_SECONDS, n_rows - 0.5, -0.5))
    times = (np.argmax(shown, axis=1) + 0.5) * AUDIO_POSITION_SECONDS
    ax.plot(times, np.arange(n_rows), "o", color="C3", ms=3, label="peak of each row")
    ax.set_yticks(range(n_rows), labels, fontsize=7)
    ax.set_ylabel("predicted token")
    ax.legend(loc="lower left", fontsize=7, frameon=False)
    fig.suptitle(title or "cross-attention alignment (mean over layers and heads)", fontsize=10)
    return save_figure(fig, path)


def plot_head_patching(values, *, path=None, title: str | None = None,
                       label: str = "mean change of the clean-token logits") -> Figure:
    """Heatmap of ``values`` [layers, heads] with each cell's value written in it."""
    values = np.asarray(values, np.float32)
    n_layers, n_heads = values.shape
    fig = Figure(figsize=(max(4.5, 0.75 * n_heads + 2.5), 0.5 * n_layers + 1.8))
    ax = fig.add_subplot()
    limit = max(float(np.abs(values).max()), 1e-6)  # symmetric, so zero is white
    im = ax.imshow(values, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    for layer in range(n_layers):
        for head in range(n_heads):
            v = values[layer, head]
            ax.text(head, layer, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * limit else "black")
    ax.set_xticks(range(n_heads))
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("head")
    ax.set_ylabel("decoder layer")
    ax.set_title(title or "patching each head towards the white-noise run", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).set_label(label, fontsize=8)
    return save_figure(fig, path)
