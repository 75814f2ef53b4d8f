"""The ``jaxasr-interp`` command line: argument parsing; every command calls library functions."""

from jaxasr_interp.cli.main import main

__all__ = ["main"]
