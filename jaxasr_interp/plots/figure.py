"""What every figure module shares: writing a built ``Figure`` to a PNG when a path is given."""

from __future__ import annotations

from matplotlib.figure import Figure


def save_figure(fig: Figure, path, dpi: int = 110) -> Figure:
    """Write ``fig`` to ``path`` (tight bounding box) unless ``path`` is None; return ``fig``."""
    if path is not None:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig
