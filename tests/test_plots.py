"""The patching and probing figures draw the numbers they are given (read back from the
artists, not only "a file exists"), write decodable PNGs, and never switch matplotlib's backend."""

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from jaxasr_interp.plots.patching import plot_alpha_curves, plot_head_heatmap, plot_layer_lines
from jaxasr_interp.plots.probes import plot_probe_layers


def test_head_heatmap_draws_the_values_and_outlines_the_best(tmp_path):
    backend = matplotlib.get_backend()
    values = np.arange(12, dtype=float).reshape(3, 4) % 7  # max 6 at layer 1, head 2
    fig = plot_head_heatmap(values, path=tmp_path / "h.png", title="t", label="%")
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), values)
    assert [t.get_text() for t in ax.texts] == [f"{v:.0f}" for v in values.ravel()]
    (box,) = ax.patches
    assert box.get_xy() == (2 - 0.5, 1 - 0.5)  # the best cell: layer 1, head 2
    png = imread(tmp_path / "h.png")
    assert png.ndim == 3 and png.shape[0] > 100 and png[..., :3].std() > 0.05  # a drawn image
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match=r"\[layers, heads\]"):
        plot_head_heatmap(np.zeros(3))


def test_alpha_curves_and_layer_lines_draw_each_series(tmp_path):
    alphas = [0.0, 0.5, 1.0]
    curves = {"encoder.block": [0.0, 0.3, 0.9], "decoder.mlp": [0.0, 0.1, 0.2]}
    ax = plot_alpha_curves(alphas, curves, path=tmp_path / "a.png").axes[0]
    assert [line.get_label() for line in ax.lines] == list(curves)
    for line, want in zip(ax.lines, curves.values()):
        np.testing.assert_array_equal(line.get_xdata(), alphas)
        np.testing.assert_array_equal(line.get_ydata(), want)
    fams = {"encoder.attn": [1, 2, 3, 4], "encoder.mlp": [4, 3, 2, 1], "decoder.block": [5, 6]}
    fig = plot_layer_lines(fams, path=tmp_path / "l.png")
    enc, dec = fig.axes
    assert [line.get_label() for line in enc.lines] == ["attn", "mlp"] and [line.get_label() for line in dec.lines] == ["block"]
    np.testing.assert_array_equal(dec.lines[0].get_ydata(), [5, 6])
    assert imread(tmp_path / "l.png").shape[1] > imread(tmp_path / "a.png").shape[1]  # two panels are wider


def test_probe_layers_plots_accuracy_control_and_chance(tmp_path):
    rows = [{"stack": s, "layer": l, "accuracy": a, "control_accuracy": c, "chance": 0.6}
            for s, base in (("encoder", 0.7), ("decoder", 0.8)) for l, (a, c) in
            enumerate([(base, 0.5), (base + 0.1, 0.55)])]
    path = plot_probe_layers(rows, tmp_path / "p.png", title="gender")
    assert path.is_file() and imread(path)[..., :3].std() > 0.05
