"""Activation patching: component and head sweeps, decoding sweeps, attribution patching,
reference runs, and sweeps of audio files (:mod:`.on_audio`).

``jaxasr_interp.patching`` was a module before it was a package: its names stay importable here.
"""

from jaxasr_interp.patching.attribution import attribution_batch, attribution_patching
from jaxasr_interp.patching.decoding import decode_sweep, family_decode_sweep
from jaxasr_interp.patching.on_audio import (alpha_curves, decode_audio, largest_drop, pooled, sweep_audio,
                                             sweep_statistics, transcript_positions)
from jaxasr_interp.patching.reference import reference_activations, white_noise
from jaxasr_interp.patching.sweeps import (FAMILIES, MODES, component_sweep, family_grid, family_of,
                                           head_sweep, readout, single_patch_edits)

__all__ = ["FAMILIES", "MODES", "alpha_curves", "attribution_batch", "attribution_patching", "component_sweep",
           "decode_audio", "decode_sweep", "family_decode_sweep", "family_grid", "family_of", "head_sweep",
           "largest_drop", "pooled", "readout", "reference_activations", "single_patch_edits", "sweep_audio",
           "sweep_statistics", "transcript_positions", "white_noise"]
