"""Lenses: the decoder logit lens, the encoder lens, and the tuned (learned) lens."""

from jaxasr_interp.lenses.encoder import EncoderLens, encoder_lens, pooled_rates
from jaxasr_interp.lenses.logit import LENS_SITES, LogitLens, logit_lens, saturation_layer
from jaxasr_interp.lenses.tuned import load_translators, save_translators, train_tuned_lens

__all__ = ["EncoderLens", "LENS_SITES", "LogitLens", "encoder_lens", "load_translators",
           "logit_lens", "pooled_rates", "saturation_layer", "save_translators", "train_tuned_lens"]
