"""The self-contained HTML report of one utterance (``jaxasr-interp report``)."""

from jaxasr_interp.report.page import report

__all__ = ["report"]
