"""Probe features of Whisper, streamed to disk in chunks and resumable.

Per utterance, for every layer:

* encoder: ``encoder.resid_post`` mean-pooled over the positions that hold audio. The encoder
  has ``n_audio_ctx`` positions for the 30 s window (1500; two mel frames of 10 ms each per
  position, conv2 has stride 2), so an utterance of ``s`` samples fills
  ``ceil(ceil(s / 160) / 2)`` of them; the rest is padding and is masked out of the mean.
* decoder: ``decoder.resid_post`` at the end-of-text position of a teacher-forced pass over
  the model's own greedy transcript (``prompt + transcript + <|endoftext|>``).

``extract_features(model, audio, out_dir)`` processes ``chunk_size`` utterances at a time, a
resumable job of :mod:`jaxasr_interp.core.resumable`: each chunk is written as
``chunk_NNNNN.npz`` (atomically: a temporary file, then a rename), next to the job's
``sweep.json`` whose key names the format, the model, the items and the settings. Memory holds
one chunk. Rerun after an interruption and it skips the chunks already on disk; every chunk is
computed by the same compiled programs from the same inputs (the last chunk is padded to full
size), so a resumed extraction is bit-identical to an uninterrupted one. A directory holding a
different extraction is an error, never silently mixed.

``load_features(dir)`` -> :class:`Features`; ``probe_matrix`` stacks the encoder and decoder
layers ``[L_enc + L_dec, n, D]`` for :func:`.probes.probe_sweep`.

``dtype`` / ``precision`` (:mod:`jaxasr_interp.core.dtypes`): the model runs in ``dtype`` (None:
the parameters' storage dtype) at ``precision``; the encoder mean is taken in float32 and the
features are stored as float32 whatever the compute dtype (bfloat16 values are exact in it). A
non-default dtype or precision is part of the job's key (so a bfloat16 extraction never mixes
with a float32 one); the defaults are not, so earlier extractions still resume.
"""

from __future__ import annotations

import dataclasses
import json
import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import as_precision, compute_dtype
from jaxasr_interp.whisper.audio import HOP_LENGTH, load_audio, log_mel
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.core.resumable import MANIFEST, load_chunks, read_manifest, resumable_run
from jaxasr_interp.core.sharding import shard_leading
from jaxasr_interp.whisper.tokenizer import cut_at_eot, teacher_tokens

FORMAT = "jaxasr-interp features v1"


def audio_positions(n_samples: int, n_audio_ctx: int) -> int:
    """Encoder positions that hold audio for an utterance of ``n_samples`` 16 kHz samples."""
    frames = math.ceil(n_samples / HOP_LENGTH)
    return max(1, min(n_audio_ctx, math.ceil(frames / 2)))


def pool_encoder(resid, n_valid):
    """Mean of ``resid [L, S, D]`` over the first ``n_valid`` positions -> ``[L, D]``, in float32."""
    resid = resid.astype(jnp.float32)
    mask = (jnp.arange(resid.shape[1]) < n_valid).astype(resid.dtype)
    return jnp.einsum("lsd,s->ld", resid, mask) / mask.sum()


@functools.partial(jax.jit, static_argnames=("dims", "dtype", "precision"))
def _encoder_chunk(params, mels, n_valid, *, dims, dtype, precision):
    def one(mel, n):
        features, acts = encode(params, mel, dims=dims, capture=("encoder.resid_post",), dtype=dtype,
                                precision=precision)
        return features, pool_encoder(acts["encoder.resid_post"], n)
    return jax.vmap(one)(mels, n_valid)


@functools.partial(jax.jit, static_argnames=("dims", "dtype", "precision"))
def _decoder_chunk(params, audio_features, tokens, eot_pos, *, dims, dtype, precision):
    def one(af, toks, pos):
        _, acts = decode(params, toks, af, dims=dims, capture=("decoder.resid_post",), dtype=dtype,
                         precision=precision)
        return acts["decoder.resid_post"][:, pos].astype(jnp.float32)
    return jax.vmap(one)(audio_features, tokens, eot_pos)


def _teacher_batch(prompt: list, ids: np.ndarray, eot: int):
    """prompt + transcript + eot of each greedy row (eot-padded to one length) and the index of
    that eot. A transcript cut at max_new_tokens has no eot: the appended one closes it."""
    width = len(prompt) + ids.shape[1] + 1
    tokens = np.asarray([teacher_tokens(prompt, row, eot, width) for row in ids], np.int32)
    return tokens, np.asarray([len(prompt) + len(cut_at_eot(row, eot)) for row in ids], np.int32)


def _chunk_features(model, items, *, chunk_size, max_new_tokens, dtype, precision):
    dims, tok = model.dims, model.tokenizer
    audios = [load_audio(a) for a in items]
    n_valid = [audio_positions(a.size, dims.n_audio_ctx) for a in audios]
    mels = [log_mel(a, n_mels=dims.n_mels) for a in audios]
    pad = chunk_size - len(mels)  # full-size chunks: one compiled program, identical results
    mels = jnp.stack(mels + [mels[-1]] * pad)
    n_valid_arr = jnp.asarray(n_valid + [n_valid[-1]] * pad, jnp.int32)
    mels, n_valid_arr = shard_leading((mels, n_valid_arr))  # the chunk over all devices
    numerics = dict(dtype=dtype, precision=precision)
    audio_features, enc = _encoder_chunk(model.params, mels, n_valid_arr, dims=dims, **numerics)
    prompt = tok.prompt()
    no_bias = logit_bias(dims.n_vocab, ())
    ids = np.asarray(greedy_decode(model.params, audio_features, jnp.asarray(prompt, jnp.int32), tok.eot,
                                   no_bias, no_bias, dims=dims, max_new_tokens=max_new_tokens, **numerics))
    tokens, eot_pos = _teacher_batch(prompt, ids, tok.eot)
    dec = _decoder_chunk(model.params, audio_features, jnp.asarray(tokens), jnp.asarray(eot_pos), dims=dims,
                         **numerics)
    keep = len(items)
    texts = [tok.decode(cut_at_eot(row, tok.eot)) for row in ids[:keep]]
    return dict(encoder=np.asarray(enc)[:keep], decoder=np.asarray(dec)[:keep],
                n_valid=np.asarray(n_valid, np.int32), transcript_ids=ids[:keep],
                transcripts=np.asarray(texts, dtype=np.str_))


def extract_features(model, audio, out_dir, *, chunk_size: int = 8, max_new_tokens: int | None = None,
                     progress: bool = True, limit_chunks: int | None = None, dtype=None,
                     precision: str | None = "highest") -> Path:
    """Extract the features of every item of ``audio`` (paths) into ``out_dir`` (module
    docstring), the model run in ``dtype`` (None: its storage dtype) at ``precision``.
    ``limit_chunks`` stops after that many newly written chunks (a time box; rerunning
    continues)."""
    dtype, precision = compute_dtype(dtype, model.params), as_precision(precision)
    items = [str(a) for a in audio]
    if not items:
        raise ValueError("no audio items to extract features from")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    max_new_tokens = max_new_tokens or model.dims.n_text_ctx // 2
    meta = dict(format=FORMAT, model=model.source, dims=dataclasses.asdict(model.dims), items=items,
                chunk_size=chunk_size, max_new_tokens=max_new_tokens, eot=model.tokenizer.eot)
    if dtype != jnp.float32 or precision != "highest":  # the defaults stay out: old jobs resume
        meta.update(dtype=jnp.dtype(dtype).name, precision=precision)
    chunks = [items[start:start + chunk_size] for start in range(0, len(items), chunk_size)]
    adopt_meta_json(out_dir)
    compute = functools.partial(_chunk_features, model, chunk_size=chunk_size, max_new_tokens=max_new_tokens,
                                dtype=dtype, precision=precision)
    resumable_run(compute, chunks, out_dir, key=meta, store="npz", limit=limit_chunks, progress=progress,
                  desc="features", what="feature extraction")
    return Path(out_dir)


def adopt_meta_json(out_dir) -> None:
    """An extraction written before the one resumable mechanism recorded its job in
    ``meta.json`` with the same ``chunk_NNNNN.npz`` files: record it in the manifest the
    mechanism reads (``sweep.json``), so earlier work still loads and resumes."""
    out = Path(out_dir)
    old, manifest = out / "meta.json", out / MANIFEST
    if old.is_file() and not manifest.exists():
        meta = json.loads(old.read_text())
        n_chunks = -(-len(meta["items"]) // meta["chunk_size"])
        manifest.write_text(json.dumps({"key": meta, "n_chunks": n_chunks}, indent=1) + "\n")


@dataclasses.dataclass(frozen=True)
class Features:
    """Features of ``n`` items: ``encoder [L_enc, n, D]``, ``decoder [L_dec, n, D]``,
    ``n_valid [n]`` encoder positions with audio, ``transcripts`` (the model's own)."""

    encoder: np.ndarray
    decoder: np.ndarray
    n_valid: np.ndarray
    transcripts: list
    transcript_ids: list
    items: list
    model: str


def load_features(out_dir) -> Features:
    """Read a complete extraction; an incomplete one is an error saying how to finish it."""
    adopt_meta_json(out_dir)
    meta = read_manifest(out_dir, what="feature extraction")["key"]
    parts = load_chunks(out_dir, "npz", what="feature extraction")
    cat = lambda key: np.concatenate([p[key] for p in parts])
    ids = [cut_at_eot(row, int(meta["eot"])) for row in cat("transcript_ids")]
    return Features(cat("encoder").transpose(1, 0, 2), cat("decoder").transpose(1, 0, 2),
                    cat("n_valid"), [str(t) for t in cat("transcripts")], ids, meta["items"], meta["model"])


def probe_matrix(features: Features) -> tuple[np.ndarray, list[str]]:
    """Encoder then decoder layers stacked ``[L_enc + L_dec, n, D]`` and a name per layer."""
    if features.encoder.shape[2] != features.decoder.shape[2]:
        raise ValueError("encoder and decoder widths differ; probe them separately")
    names = [f"encoder.{i}" for i in range(features.encoder.shape[0])] + \
            [f"decoder.{i}" for i in range(features.decoder.shape[0])]
    return np.concatenate([features.encoder, features.decoder]).astype(np.float32), names
