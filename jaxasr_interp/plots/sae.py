"""Figures of SAE latents (:mod:`jaxasr_interp.sae.inspect`); a ``Figure`` built directly (no
pyplot), a PNG written when ``path`` is given, as every module of :mod:`jaxasr_interp.plots`.

- :func:`plot_latent_trace`: encoder sites, a latent's activation per 20 ms audio frame under
  the clip's mel spectrogram on the same time axis (a marked frame, e.g. the top-activating
  one, as a vertical line); decoder sites, its activation at each predicted token, as bars.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from jaxasr_interp.plots.figure import save_figure
from jaxasr_interp.plots.lens import figure_with_mel


def plot_latent_trace(trace, column: int = 0, *, name: str = "latent", mark: float | None = None,
                      path=None, title: str | None = None) -> Figure:
    """``trace`` a :class:`~jaxasr_interp.sae.inspect.Trace`; ``column`` the latent's column in
    ``trace.values``; ``mark`` a time in seconds to draw (encoder sites)."""
    values = np.asarray(trace.values)[:, column]
    if trace.times is None:
        return _token_bars(values, trace.labels, name, path, title)
    fig, _, (ax,) = figure_with_mel(trace.mel, 1, trace.seconds, figsize=(10, 4.2), height_ratios=[1.2, 1])
    step = trace.times[1] - trace.times[0] if len(trace.times) > 1 else 0.02
    ax.fill_between(trace.times - step / 2, values, step="post", color="C0", alpha=0.35)
    ax.step(trace.times - step / 2, values, where="post", color="C0", lw=1)
    if mark is not None:
        ax.axvline(mark, color="C3", lw=1, ls="--", label="top-activating frame")
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    ax.set_ylabel(f"{name}\nactivation")
    ax.set_ylim(bottom=0)
    fig.suptitle(title or f"{name} over the clip (20 ms frames)", fontsize=10)
    return save_figure(fig, path)


def _token_bars(values, labels, name, path, title) -> Figure:
    fig = Figure(figsize=(max(5.0, 0.35 * len(values) + 2), 3.0))
    ax = fig.add_subplot()
    ax.bar(np.arange(len(values)), values, color="C0")
    ax.set_xticks(np.arange(len(values)), [repr(t)[1:-1] for t in labels], rotation=70, fontsize=7)
    ax.set_xlabel("predicted token")
    ax.set_ylabel(f"{name} activation")
    ax.set_title(title or f"{name} at each transcript position", fontsize=10)
    return save_figure(fig, path)
