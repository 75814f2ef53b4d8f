"""Matplotlib figures for the lenses, and a reusable mel-spectrogram-above layout.

Every function builds a ``matplotlib.figure.Figure`` directly (no pyplot, so no global figure
state and no GUI backend), returns it, and writes a PNG when ``path`` is given.

- :func:`figure_with_mel`: a figure whose top panel is the mel spectrogram, time in seconds,
  over panels that share its time axis (use it whenever the x axis is time).
- :func:`plot_logit_lens`: layers x positions, colour = the lens's probability of the model's
  final token, the lens's top-1 token written in each cell, saturation layers marked.
- :func:`plot_encoder_lens`: WER by encoder layer (pooled, and per utterance) with each layer's
  transcript beside the curve; the mel spectrogram above when one utterance is shown.
- :func:`plot_saturation_histogram`: how many positions saturate at each decoder layer.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.figure import Figure

from jaxasr_interp.plots.figure import save_figure

HOP_SECONDS = 0.01  # Whisper's mel hop: 160 samples at 16 kHz


def draw_mel(ax, mel, seconds: float | None = None):
    """Mel spectrogram [n_mels, frames] on ``ax``, x in seconds (trimmed to ``seconds``)."""
    mel = np.asarray(mel)
    frames = mel.shape[1] if seconds is None else min(mel.shape[1], int(np.ceil(seconds / HOP_SECONDS)))
    ax.imshow(mel[:, :frames], origin="lower", aspect="auto", cmap="magma",
              extent=(0, frames * HOP_SECONDS, 0, mel.shape[0]))
    ax.set_ylabel("mel bin")
    return ax


def figure_with_mel(mel, n_panels: int = 1, seconds: float | None = None, figsize=(10, 6),
                    height_ratios=None):
    """(figure, mel axis, [panel axes]): the mel on top, panels below sharing its time axis."""
    fig = Figure(figsize=figsize)
    ratios = height_ratios or [1] + [2] * n_panels
    grid = fig.add_gridspec(1 + n_panels, 1, height_ratios=ratios, hspace=0.08)
    ax_mel = fig.add_subplot(grid[0])
    draw_mel(ax_mel, mel, seconds)
    panels = [fig.add_subplot(grid[i + 1], sharex=ax_mel) for i in range(n_panels)]
    for ax in [ax_mel] + panels[:-1]:
        ax.tick_params(labelbottom=False)
    (panels[-1] if panels else ax_mel).set_xlabel("time (s)")
    return fig, ax_mel, panels


def _short(text: str, n: int = 7) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_logit_lens(lens, tokenizer, *, site: str = "resid_post", index: int | None = None,
                    path=None, max_positions: int = 48, title: str | None = None) -> Figure:
    """Heatmap of one utterance (``index`` into a batched lens)."""
    fields = lens.site(site)
    prob, top = fields["final_prob"], fields["top_ids"][..., 0]
    tokens, sat = lens.tokens, lens.saturation
    if index is not None:
        prob, top, tokens, sat = prob[index], top[index], tokens[index], sat[index]
    elif prob.ndim != 2:
        raise ValueError("this lens is batched: pass index= to choose an utterance")
    n_layers, n_pos = prob.shape
    n_pos = min(n_pos, max_positions)
    fig = Figure(figsize=(max(6.0, 0.62 * n_pos + 1.5), 0.55 * n_layers + 2.2))
    ax = fig.add_subplot()
    im = ax.imshow(prob[:, :n_pos], origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for layer in range(n_layers):
        for t in range(n_pos):
            label = _short(tokenizer.decode([int(top[layer, t])]) or tokenizer.tokenizer.id_to_token(int(top[layer, t])) or "?")
            ax.text(t, layer, label, ha="center", va="center", fontsize=6.5,
                    color="black" if prob[layer, t] > 0.6 else "white")
    ax.scatter(np.arange(n_pos), np.minimum(sat[:n_pos], n_layers - 0.5) - 0.42, marker="^",
               s=14, color="red", label="saturation layer")
    inputs = [_short(tokenizer.decode([int(i)]) or tokenizer.tokenizer.id_to_token(int(i)) or "?", 9)
              for i in tokens[:n_pos]]
    ax.set_xticks(range(n_pos), inputs, rotation=70, fontsize=7)
    ax.set_yticks(range(n_layers))
    ax.set_xlabel("input token at each position (the cell reads the prediction of the next one)")
    ax.set_ylabel(f"decoder layer ({site})")
    ax.set_title(title or "logit lens: colour = P(final prediction), text = lens top-1")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, -0.02), fontsize=7, frameon=False)
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    return save_figure(fig, path)


def plot_encoder_lens(lenses, *, path=None, mel=None, seconds: float | None = None,
                      title: str | None = None, wrap: int = 70) -> Figure:
    """WER by layer with the transcripts of the first utterance written beside each layer."""
    from jaxasr_interp.lenses.encoder import EncoderLens, pooled_rates
    lenses = [lenses] if isinstance(lenses, EncoderLens) else list(lenses)
    wer, _ = pooled_rates(lenses)
    n_layers = len(wer)
    height = 0.5 * n_layers + 2.5
    if mel is not None:
        fig = Figure(figsize=(13, height + 1.6))
        grid = fig.add_gridspec(2, 2, height_ratios=[1.3, height], width_ratios=[1, 1.6], hspace=0.35)
        draw_mel(fig.add_subplot(grid[0, :]), mel, seconds).set_xlabel("time (s)")
        ax, ax_text = fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])
    else:
        fig = Figure(figsize=(13, height))
        grid = fig.add_gridspec(1, 2, width_ratios=[1, 1.6])
        ax, ax_text = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
    layers = np.arange(n_layers)
    capped = lambda w: np.minimum(w, 1.5)  # an inf (words said to an empty reference) stays visible
    for lens in lenses if len(lenses) > 1 else []:
        ax.plot(capped(lens.wer), layers, color="0.75", lw=0.8)
    ax.plot(capped(wer), layers, "o-", color="C0", lw=2, label=f"pooled WER ({len(lenses)} utt.)")
    ax.set_yticks(layers)
    ax.set_ylim(-0.5, n_layers - 0.5)
    ax.set_xlabel("WER (capped at 1.5)")
    ax.set_ylabel("encoder layer" + ("" if lenses[0].ln_post else " (no ln_post)"))
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    ax_text.set_ylim(-0.5, n_layers - 0.5)
    ax_text.axis("off")
    for layer, text in enumerate(lenses[0].transcripts):
        shown = textwrap.shorten(text.strip() or "(empty)", wrap * 2, placeholder=" …")
        ax_text.text(0, layer, f"{layer}: " + "\n".join(textwrap.wrap(shown, wrap)), va="center",
                     fontsize=7.5, family="monospace")
    ax_text.set_title("transcript per layer (first utterance)", fontsize=9, loc="left")
    fig.suptitle(title or "encoder lens: ln_post(encoder layer l) -> unchanged decoder")
    return save_figure(fig, path)


def plot_saturation_histogram(saturations, n_layers: int, *, labels=None, path=None,
                              title: str | None = None) -> Figure:
    """Histogram of saturation layers (one array per series; ``n_layers`` = never saturates)."""
    if isinstance(saturations, np.ndarray) or not isinstance(saturations, (list, tuple)):
        saturations = [saturations]
    labels = labels or [None] * len(saturations)
    fig = Figure(figsize=(6, 3.4))
    ax = fig.add_subplot()
    bins = np.arange(n_layers + 2) - 0.5
    width = 0.8 / len(saturations)
    for i, (sat, label) in enumerate(zip(saturations, labels)):
        counts, _ = np.histogram(np.ravel(sat), bins=bins)
        mean = np.mean(np.ravel(sat))
        ax.bar(np.arange(n_layers + 1) + (i - (len(saturations) - 1) / 2) * width, counts, width,
               label=f"{label + ': ' if label else ''}mean {mean:.2f}")
    ax.set_xticks(range(n_layers + 1), [str(i) for i in range(n_layers)] + ["never"])
    ax.set_xlabel("saturation layer (earliest layer whose top-1 stays the final top-1)")
    ax.set_ylabel("token positions")
    ax.set_title(title or "logit-lens saturation layers")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
