"""Matplotlib figures (no pyplot state): lenses, probes, patching, the report's panels.

``jaxasr_interp.plots`` was the lens-figure module before it was a package: its names stay
importable here.
"""

from jaxasr_interp.plots.lens import (draw_mel, figure_with_mel, plot_encoder_lens, plot_logit_lens,
                                      plot_saturation_histogram)

__all__ = ["draw_mel", "figure_with_mel", "plot_encoder_lens", "plot_logit_lens",
           "plot_saturation_histogram"]
