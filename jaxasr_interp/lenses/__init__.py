"""Lenses: the decoder logit lens, the encoder lens, and the tuned (learned) lens; both lenses on
audio files, with their records and table rows (:mod:`.files`)."""

from jaxasr_interp.lenses.encoder import EncoderLens, encoder_lens, pooled_rates
from jaxasr_interp.lenses.files import (audio_mel, encoder_lens_record, encoder_lens_rows, logit_lens_files,
                                        logit_lens_record, logit_lens_rows, saturation_summary, teacher_ids)
from jaxasr_interp.lenses.logit import LENS_SITES, LogitLens, logit_lens, saturation_layer
from jaxasr_interp.lenses.tuned import load_translators, save_translators, train_tuned_lens

__all__ = ["EncoderLens", "LENS_SITES", "LogitLens", "audio_mel", "encoder_lens", "encoder_lens_record",
           "encoder_lens_rows", "load_translators", "logit_lens", "logit_lens_files", "logit_lens_record",
           "logit_lens_rows", "pooled_rates", "saturation_layer", "saturation_summary", "save_translators",
           "teacher_ids", "train_tuned_lens"]
