"""Linear probes: features streamed from the model, the compiled probe sweep, its solver.

``jaxasr_interp.probes`` was a module before it was a package: its names stay importable here.
"""

from jaxasr_interp.probes.features import Features, extract_features, load_features, probe_matrix
from jaxasr_interp.probes.sweep import (DEFAULT_L2, ProbeResult, planted_features, probe_sweep,
                                        stratified_folds)

__all__ = ["DEFAULT_L2", "Features", "ProbeResult", "extract_features", "load_features",
           "planted_features", "probe_matrix", "probe_sweep", "stratified_folds"]
