"""jaxasr-interp: mechanistic interpretability of Whisper in JAX."""
