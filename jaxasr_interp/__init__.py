"""jaxasr-interp: mechanistic interpretability of Whisper in JAX.

Public API (re-exports only)::

    import jaxasr_interp as jai
    model = jai.load("tiny.en")
    mel = jai.log_mel(jai.load_audio("x.wav"), n_mels=model.dims.n_mels)
    logits, acts = jai.forward(model.params, mel, tokens, dims=model.dims, capture=[...])
    texts = jai.transcribe(model, ["a.wav", "b.wav"])
"""

from jaxasr_interp.whisper.api import Model, encode_batch, load, transcribe, transcribe_ids
from jaxasr_interp.whisper.audio import load_audio, log_mel, pad_or_trim, sample_path, sample_transcripts
from jaxasr_interp.whisper.config import PRESETS, Dims, preset
from jaxasr_interp.whisper.decoding import greedy_decode, init_cache
from jaxasr_interp.core.edits import Edit, add, interpolate, replace, restrict, zero
from jaxasr_interp.core.compile_cache import enable_compilation_cache
from jaxasr_interp.whisper.model import decode, encode, forward
from jaxasr_interp.whisper.model import decode_from, encode_from
from jaxasr_interp.whisper.sharding import shard_params
from jaxasr_interp.patching.reference import reference_activations, white_noise
from jaxasr_interp.whisper.sites import ALL_SITES
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer
from jaxasr_interp.weights import load_weights
from jaxasr_interp.data import Dataset, read_dataset, write_dataset
from jaxasr_interp.probes.features import Features, extract_features, load_features, probe_matrix
from jaxasr_interp.probes.sweep import ProbeResult, probe_sweep
from jaxasr_interp.lenses.encoder import EncoderLens, encoder_lens, pooled_rates
from jaxasr_interp.lenses.logit import LogitLens, logit_lens, saturation_layer
from jaxasr_interp.lenses.tuned import load_translators, save_translators, train_tuned_lens
from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep
from jaxasr_interp.patching.decoding import decode_sweep
from jaxasr_interp.patching.attribution import attribution_patching
from jaxasr_interp import qwen2_audio  # Qwen2-Audio, the paper's second model (its own namespace: jai.qwen2_audio)
from jaxasr_interp.report.page import report

__all__ = [
    "ALL_SITES", "Dataset", "Dims", "Edit", "EncoderLens", "FAMILIES", "Features", "LogitLens",
    "Model", "PRESETS", "ProbeResult", "WhisperTokenizer", "add", "attribution_patching",
    "component_sweep", "decode", "decode_from", "decode_sweep", "enable_compilation_cache", "encode", "encode_batch",
    "encode_from", "encoder_lens", "extract_features", "forward", "greedy_decode", "init_cache",
    "interpolate", "load", "load_audio", "load_features", "load_translators", "load_weights",
    "log_mel", "logit_lens", "nnx", "pad_or_trim", "pooled_rates", "preset", "probe_matrix",
    "probe_sweep", "qwen2_audio", "read_dataset", "reference_activations", "replace", "report", "restrict",
    "sample_path", "sample_transcripts", "saturation_layer", "save_translators", "shard_params",
    "train_tuned_lens", "transcribe", "transcribe_ids", "white_noise", "write_dataset", "zero",
]


def __getattr__(name: str):
    # jai.nnx (the flax.nnx module view, jai.nnx.Whisper(model)) is imported on first use:
    # flax.nnx costs ~0.65 s at import, which every command would otherwise pay
    if name == "nnx":
        import importlib
        return importlib.import_module("jaxasr_interp.nnx")
    raise AttributeError(f"module 'jaxasr_interp' has no attribute {name!r}")
