"""Activation patching: component and head sweeps, decoding sweeps, attribution patching,
reference runs.

``jaxasr_interp.patching`` was a module before it was a package: its names stay importable here.
"""

from jaxasr_interp.patching.attribution import attribution_patching
from jaxasr_interp.patching.decoding import decode_sweep, family_decode_sweep
from jaxasr_interp.patching.reference import reference_activations, white_noise
from jaxasr_interp.patching.sweeps import (FAMILIES, MODES, component_sweep, family_grid, family_of,
                                           head_sweep, readout, single_patch_edits)

__all__ = ["FAMILIES", "MODES", "attribution_patching", "component_sweep", "decode_sweep",
           "family_decode_sweep", "family_grid", "family_of", "head_sweep", "readout",
           "reference_activations", "single_patch_edits", "white_noise"]
