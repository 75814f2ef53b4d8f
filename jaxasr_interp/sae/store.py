"""Activation store: the activations of Whisper sites over many clips, on disk in shards.

``write_activations(model, audio, out_dir, sites=..., layers=...)`` captures block sites of one
stack (``jai.encode`` / ``jai.decode`` ``capture=``) for ``chunk_size`` clips at a time and
writes one shard per chunk, ``chunk_NNNNN.npz``: for each site an array ``[L, n, D]`` (the
chosen layers, one row per kept position, the same positions for every layer and site; head
sites such as ``attn.z`` flattened to ``H * dh``), plus ``clip [n]`` (the clip's index in
``audio``) and ``pos [n]`` (its position), so a row can be traced back to its audio.

Rows:

* encoder: per frame, only the positions that hold audio. The 30 s window has ``n_audio_ctx``
  (1500) positions; a clip of ``s`` samples fills ``audio_positions(s)`` = ``ceil(ceil(s /
  160) / 2)`` of them; the rest is padding and never stored.
* decoder: per token of a teacher-forced pass over the model's own greedy transcript
  (``prompt + transcript + <|endoftext|>``): the positions that predict a transcript token or
  the end-of-text, from the last prompt token on.
* ``keep < 1`` subsamples each clip's rows (a uniform draw without replacement of
  ``max(1, round(keep * n))``, seeded by ``(seed, clip)``), and each shard's rows are shuffled
  across its clips (seeded by ``(seed, first clip)``).

The job is resumable through :mod:`jaxasr_interp.core.resumable`, like feature extraction:
each shard is written whole (a temporary name, then a rename) next to ``sweep.json`` naming the
job; a rerun skips finished shards, and every shard is computed by the same compiled programs
from the same inputs (the last chunk is padded to full size), so a resumed store equals an
uninterrupted one. Memory holds one chunk, whatever the number of clips.

:class:`ActivationStore` reads a finished store: ``batches(batch_size, seed=...)`` yields
``[L, B, D]`` arrays, shards visited in a seeded random order and ``mix`` of them shuffled
together at a time (clips mixed across shards; memory holds ``mix`` shards).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import as_dtype, as_precision, storage_dtype
from jaxasr_interp.core.resumable import chunk_path, finished_chunks, read_manifest, resumable_run
from jaxasr_interp.core.sites import axes
from jaxasr_interp.probes.features import audio_positions
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.whisper.sites import WHISPER
from jaxasr_interp.whisper.tokenizer import cut_at_eot, teacher_tokens

FORMAT = "jaxasr-interp activations v1"
WHAT = "activation store"


def check_sites(sites: Sequence[str], dims) -> str:
    """The one stack that every site belongs to; sites must be per-position block sites."""
    stacks = {WHISPER.stack_of(s) for s in sites}
    if not sites or len(stacks) != 1:
        raise ValueError(f"sites must be one or more sites of one stack, got {list(sites)}")
    for s in sites:
        if s not in WHISPER.block_sites or axes(s)[0] != "pos" or s in WHISPER.audio_sites:
            raise ValueError(f"{s!r} is not a per-position block site (attention patterns, "
                             "whole-stack sites and cross-attention k/v are not stored)")
    return stacks.pop()


@functools.partial(jax.jit, static_argnames=("dims", "sites", "layers", "dtype", "precision"))
def _encoder_acts(params, mels, *, dims, sites, layers, dtype=jnp.float32, precision="highest"):
    def one(mel):
        _, acts = encode(params, mel, dims=dims, capture=sites, dtype=dtype, precision=precision)
        return {s: acts[s][jnp.asarray(layers)] for s in sites}
    return jax.vmap(one)(mels)


@functools.partial(jax.jit, static_argnames=("dims", "sites", "layers", "dtype", "precision"))
def _decoder_acts(params, audio_features, tokens, *, dims, sites, layers, dtype=jnp.float32, precision="highest"):
    def one(af, toks):
        _, acts = decode(params, toks, af, dims=dims, capture=sites, dtype=dtype, precision=precision)
        return {s: acts[s][jnp.asarray(layers)] for s in sites}
    return jax.vmap(one)(audio_features, tokens)


@functools.partial(jax.jit, static_argnames=("dims", "max_new_tokens", "dtype", "precision"))
def _greedy(params, mels, prompt, eot, *, dims, max_new_tokens, dtype=jnp.float32, precision="highest"):
    af = jax.vmap(lambda m: encode(params, m, dims=dims, dtype=dtype, precision=precision)[0])(mels)
    bias = logit_bias(dims.n_vocab, ())
    return af, greedy_decode(params, af, prompt, eot, bias, bias, dims=dims, max_new_tokens=max_new_tokens,
                             dtype=dtype, precision=precision)


def _spans(model, mels, audios, settings, numerics) -> tuple[list, dict]:
    """Each clip's (start, end) positions to store and the captured sites ``[C, L, T, ...]``."""
    dims, sites, layers = model.dims, settings["sites"], settings["layers"]
    if settings["stack"] == "encoder":
        acts = _encoder_acts(model.params, mels, dims=dims, sites=sites, layers=layers, **numerics)
        return [(0, audio_positions(a.size, dims.n_audio_ctx)) for a in audios], acts
    tok = model.tokenizer
    prompt = tok.prompt()
    af, ids = _greedy(model.params, mels, jnp.asarray(prompt, jnp.int32), tok.eot, dims=dims,
                      max_new_tokens=settings["max_new_tokens"], **numerics)
    ids = np.asarray(ids)
    width = min(dims.n_text_ctx, len(prompt) + ids.shape[1] + 1)
    tokens = np.asarray([teacher_tokens(prompt, row, tok.eot, width) for row in ids], np.int32)
    acts = _decoder_acts(model.params, af, jnp.asarray(tokens), dims=dims, sites=sites, layers=layers, **numerics)
    spans = [(len(prompt) - 1, len(prompt) + len(cut_at_eot(row, tok.eot))) for row in ids]
    return spans[: len(audios)], acts


def _chunk_rows(model, chunk, *, settings, numerics) -> dict:
    """One shard: the kept rows of a chunk of ``(index, path)`` clips, shuffled."""
    audios = [load_audio(path) for _, path in chunk]
    mels = [log_mel(a, n_mels=model.dims.n_mels) for a in audios]
    mels = jnp.stack(mels + [mels[-1]] * (settings["chunk_size"] - len(mels)))  # one program
    spans, acts = _spans(model, mels, audios, settings, numerics)
    acts = jax.device_get(acts)
    keep, seed, clips, positions = settings["keep"], settings["seed"], [], []
    for (index, _), (start, end) in zip(chunk, spans):
        pos = np.arange(start, end)
        if keep < 1:
            n = max(1, round(keep * pos.size))
            pos = np.sort(np.random.default_rng((seed, index)).choice(pos, n, replace=False))
        clips.append(np.full(pos.size, index, np.int32))
        positions.append(pos.astype(np.int32))
    perm = np.random.default_rng((seed, chunk[0][0])).permutation(sum(p.size for p in positions))
    out = {"clip": np.concatenate(clips)[perm], "pos": np.concatenate(positions)[perm]}
    for site in settings["sites"]:
        rows = [acts[site][i][:, p] for i, p in enumerate(positions)]  # [L, n_i, ...]
        rows = np.concatenate([r.reshape(r.shape[:2] + (-1,)) for r in rows], axis=1)
        out[site] = rows[:, perm].astype(settings["dtype"])
    return out


def write_activations(model, audio, out_dir, *, sites: Sequence[str] = ("encoder.resid_post",),
                      layers: Sequence[int] | None = None, keep: float = 1.0, seed: int = 0,
                      chunk_size: int = 8, dtype: str = "float32", max_new_tokens: int | None = None,
                      progress: bool = True, limit_chunks: int | None = None, compute_dtype=jnp.float32,
                      precision: str | None = "highest") -> Path:
    """Stream the activations of ``sites`` (one stack; ``layers`` of it, default all) over the
    clips ``audio`` (paths) into ``out_dir`` (module docstring). ``limit_chunks`` stops after
    that many new shards (a time box: a rerun continues). ``compute_dtype`` / ``precision``:
    the model's (:mod:`jaxasr_interp.core.dtypes`; None: the parameters' storage dtype);
    ``dtype`` is the stored arrays'."""
    items = [str(a) for a in audio]
    if not items:
        raise ValueError("no audio items to store activations of")
    if not 0 < keep <= 1 or chunk_size < 1 or dtype not in ("float32", "float16"):
        raise ValueError(f"need 0 < keep <= 1, chunk_size >= 1 and dtype float32 or float16; got "
                         f"keep={keep}, chunk_size={chunk_size}, dtype={dtype!r}")
    sites = tuple(sites)
    stack = check_sites(sites, model.dims)
    n_layers = WHISPER.n_layers(sites[0], model.dims)
    layers = tuple(range(n_layers)) if layers is None else tuple(int(i) for i in layers)
    if not layers or not all(0 <= i < n_layers for i in layers):
        raise ValueError(f"layers must be in 0..{n_layers - 1}, got {list(layers)}")
    settings = dict(sites=sites, layers=layers, stack=stack, keep=keep, seed=seed, chunk_size=chunk_size,
                    dtype=dtype, max_new_tokens=max_new_tokens or model.dims.n_text_ctx // 2)
    key = dict(format=FORMAT, model=model.source, dims=dataclasses.asdict(model.dims), items=items,
               **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()})
    numerics = dict(dtype=as_dtype(compute_dtype) or storage_dtype(model.params), precision=as_precision(precision))
    if numerics != dict(dtype=jnp.float32, precision="highest"):  # the defaults stay out: old stores resume
        key.update(compute_dtype=jnp.dtype(numerics["dtype"]).name, precision=numerics["precision"])
    indexed = list(enumerate(items))
    chunks = [indexed[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    resumable_run(functools.partial(_chunk_rows, model, settings=settings, numerics=numerics), chunks, out_dir,
                  key=key, store="npz", limit=limit_chunks, progress=progress, desc="activations", what=WHAT)
    return Path(out_dir)


class ActivationStore:
    """A finished store (an unfinished one is an error saying how to finish it)."""

    def __init__(self, directory):
        self.directory = Path(directory).expanduser().absolute()
        manifest = read_manifest(self.directory, what=WHAT)
        self.meta, self.n_shards = manifest["key"], manifest["n_chunks"]
        if self.meta.get("format") != FORMAT:
            raise ValueError(f"{self.directory} is not an activation store ({self.meta.get('format')!r})")
        missing = self.n_shards - len(finished_chunks(self.directory, "npz"))
        if missing:
            raise ValueError(f"{self.directory} is an incomplete {WHAT} ({missing} of {self.n_shards} "
                             "shards missing); rerun write_activations with the same arguments to resume")
        self.sites, self.layers = list(self.meta["sites"]), list(self.meta["layers"])

    def __repr__(self):
        return f"ActivationStore({str(self.directory)!r}, sites={self.sites}, layers={self.layers})"

    def _site(self, site):
        if site is None:
            return self.sites[0]
        if site not in self.sites:
            raise KeyError(f"site {site!r} is not in this store; it holds {self.sites}")
        return site

    def shard(self, i: int, site: str | None = None) -> dict:
        """Shard ``i``: ``{"acts": [L, n, D] float32, "clip": [n], "pos": [n]}``."""
        with np.load(chunk_path(self.directory, i, "npz")) as data:
            return {"acts": data[self._site(site)].astype(np.float32), "clip": data["clip"], "pos": data["pos"]}

    @functools.cached_property
    def n_rows(self) -> int:
        total = 0
        for i in range(self.n_shards):
            with np.load(chunk_path(self.directory, i, "npz")) as data:
                total += data["clip"].size
        return total

    def batches(self, batch_size: int, *, site: str | None = None, seed: int = 0, mix: int = 4,
                epochs: int | None = 1, drop_last: bool = True) -> Iterator[np.ndarray]:
        """Batches ``[L, batch_size, D]`` (float32) over ``epochs`` passes (None: forever)."""
        rng, epoch = np.random.default_rng(seed), 0
        rest = None
        while epochs is None or epoch < epochs:
            order = rng.permutation(self.n_shards)
            for start in range(0, self.n_shards, mix):
                parts = [self.shard(int(i), site)["acts"] for i in order[start:start + mix]]
                pool = np.concatenate(([rest] if rest is not None else []) + parts, axis=1)
                pool = pool[:, rng.permutation(pool.shape[1])]
                n_full = pool.shape[1] // batch_size * batch_size
                for b in range(0, n_full, batch_size):
                    yield pool[:, b:b + batch_size]
                rest = pool[:, n_full:]
            epoch += 1
        if rest is not None and rest.shape[1] and not drop_last:
            yield rest

    def sample(self, n: int, *, site: str | None = None, seed: int = 0) -> np.ndarray:
        """``n`` rows ``[L, n, D]`` drawn as the first of :meth:`batches` (fewer if the store is smaller)."""
        return next(iter(self.batches(n, site=site, seed=seed, drop_last=False)))
