"""Sparse autoencoders on Whisper: an activation store, SAEs as pure functions, many trained
at once in one vmapped program, their quality (intrinsic and spliced into the model), the
orbax and SAELens formats, and looking at and steering with latents. See docs/sae.md."""

from jaxasr_interp.sae.inspect import clip_means, latent_trace, snippet, token_attribution, top_activations
from jaxasr_interp.sae.io import load_sae, save_sae
from jaxasr_interp.sae.metrics import evaluate
from jaxasr_interp.sae.model import KINDS, SAEConfig, decode, encode, init_params, reconstruct
from jaxasr_interp.sae.saelens import load_saelens, save_saelens
from jaxasr_interp.sae.splice import splice_cost
from jaxasr_interp.sae.steer import (ablation_delta, edited_features, edited_transcripts, edited_transcripts_many,
                                     steering_edit)
from jaxasr_interp.sae.store import ActivationStore, write_activations
from jaxasr_interp.sae.train import TrainedSAE, train_saes

__all__ = ["ActivationStore", "KINDS", "SAEConfig", "TrainedSAE", "ablation_delta", "clip_means", "decode",
           "edited_features", "edited_transcripts", "edited_transcripts_many", "encode", "evaluate",
           "init_params", "latent_trace", "load_sae", "load_saelens", "reconstruct", "save_sae",
           "save_saelens", "snippet", "splice_cost", "steering_edit", "token_attribution", "top_activations",
           "train_saes", "write_activations"]
