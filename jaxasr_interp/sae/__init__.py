"""Sparse autoencoders on Whisper: an activation store, SAEs as pure functions, many trained
at once in one vmapped program, their quality (intrinsic and spliced into the model), and the
orbax and SAELens formats. See docs/sae.md."""

from jaxasr_interp.sae.io import load_sae, save_sae
from jaxasr_interp.sae.metrics import evaluate
from jaxasr_interp.sae.model import KINDS, SAEConfig, decode, encode, init_params, reconstruct
from jaxasr_interp.sae.saelens import load_saelens, save_saelens
from jaxasr_interp.sae.splice import splice_cost
from jaxasr_interp.sae.store import ActivationStore, write_activations
from jaxasr_interp.sae.train import TrainedSAE, train_saes

__all__ = ["ActivationStore", "KINDS", "SAEConfig", "TrainedSAE", "decode", "encode", "evaluate",
           "init_params", "load_sae", "load_saelens", "reconstruct", "save_sae", "save_saelens",
           "splice_cost", "train_saes", "write_activations"]
