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
from .model import decode, encode, encode_from, forward
from .reference import reference_activations, white_noise
from .sites import ALL_SITES
from .tokenizer import WhisperTokenizer
from .weights import load_weights

__all__ = [
    "ALL_SITES", "Dims", "Edit", "Model", "PRESETS", "WhisperTokenizer", "add", "decode", "encode",
    "encode_batch", "encode_from", "forward", "greedy_decode", "init_cache", "interpolate", "load", "load_audio",
    "load_weights", "log_mel", "pad_or_trim", "preset", "reference_activations", "replace",
    "sample_path", "sample_transcripts", "transcribe", "transcribe_ids", "white_noise", "zero",
]
