"""jaxasr-interp: mechanistic interpretability of Whisper in JAX.

Public API (re-exports only)::

    import jaxasr_interp as jai
    model = jai.load("tiny.en")
    mel = jai.log_mel(jai.load_audio("x.wav"), n_mels=model.dims.n_mels)
    logits, acts = jai.forward(model.params, mel, tokens, dims=model.dims, capture=[...])
    texts = jai.transcribe(model, ["a.wav", "b.wav"])
"""

from .api import Model, encode_batch, load, transcribe, transcribe_ids
from .audio import load_audio, log_mel, pad_or_trim, sample_path, sample_transcripts
from .config import PRESETS, Dims, preset
from .decoding import greedy_decode, init_cache
from .edits import Edit, add, interpolate, replace, zero
from .model import decode, encode, forward
from .resume import decode_from, encode_from
from .reference import reference_activations, white_noise
from .sites import ALL_SITES
from .tokenizer import WhisperTokenizer
from .weights import load_weights
from .data import Dataset, read_dataset, write_dataset
from .features import Features, extract_features, load_features, probe_matrix
from .probes import ProbeResult, probe_sweep
from .encoder_lens import EncoderLens, encoder_lens, pooled_rates
from .lens import LogitLens, logit_lens, saturation_layer
from .tuned_lens import load_translators, save_translators, train_tuned_lens
from .patching import FAMILIES, component_sweep
from .patching_decode import decode_sweep
from .attribution import attribution_patching
from . import qwen2_audio  # Qwen2-Audio, the paper's second model (its own namespace: jai.qwen2_audio)
from .report import report

__all__ = [
    "ALL_SITES", "Dataset", "Dims", "Edit", "EncoderLens", "FAMILIES", "Features", "LogitLens",
    "Model", "PRESETS", "ProbeResult", "WhisperTokenizer", "add", "attribution_patching",
    "component_sweep", "decode", "decode_from", "decode_sweep", "encode", "encode_batch",
    "encode_from", "encoder_lens", "extract_features", "forward", "greedy_decode", "init_cache",
    "interpolate", "load", "load_audio", "load_features", "load_translators", "load_weights",
    "log_mel", "logit_lens", "pad_or_trim", "pooled_rates", "preset", "probe_matrix",
    "probe_sweep", "qwen2_audio", "read_dataset", "reference_activations", "replace", "report",
    "sample_path", "sample_transcripts", "saturation_layer", "save_translators",
    "train_tuned_lens", "transcribe", "transcribe_ids", "white_noise", "write_dataset", "zero",
]
