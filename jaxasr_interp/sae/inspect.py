"""Looking at one SAE latent: where it fires most, how it moves over a clip, what it writes.

* :func:`top_activations` ``(store, sae, k=)``: for every latent, the ``k`` stored rows where it
  is largest (``distinct_clips=True``: at most one row per clip, the clip's largest), as
  ``values``, ``clip`` and ``pos`` ``[d_sae, k]``, from the store's ``clip`` / ``pos`` records.
  Slots a latent never fills (fewer than ``k`` rows with a positive activation) hold value 0 and
  clip / pos -1. One pass over the shards, one jitted encoding per shard.
* :func:`clip_means`: each clip's mean latent activation over its stored rows ``[n_clips,
  d_sae]`` (with ``keep=1``: over every audio frame, the probes' encoder pooling);
  :func:`clip_stats` adds how often each latent fires per clip.
* :func:`snippet`: the audio around an encoder position. One position is 20 ms = 320 samples
  (two 10 ms mel hops, the second conv has stride 2), so position ``p`` covers samples
  ``[320 p, 320 (p + 1))``; the snippet is ``seconds`` centred there, cut at the clip's ends.
* :func:`latent_trace`: a latent's activation over one clip, from a fresh capture of the SAE's
  site and layer: per audio frame (encoder sites) or per transcript position (decoder sites:
  the positions that predict a token of the model's own greedy transcript or the end-of-text,
  as the store keeps them, each labelled with the token it predicts).
* :func:`token_attribution` (decoder sites): the tokens whose logits the latent's decoder
  direction ``d`` raises most, by direct logit attribution ``E @ (gamma * (d - mean(d)))`` with
  ``E`` the tied token embedding and ``gamma`` ``ln_final``'s scale. The approximation: the
  final LayerNorm's division by the residual's standard deviation is left out (a positive
  number per position, so the ranking is exact for a direction added to the last layer's
  output) and so is its bias (the same for every direction); a direction written before the
  last layer also passes through the later blocks, which this ignores.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.probes.features import audio_positions
from jaxasr_interp.sae import model as M
from jaxasr_interp.sae.metrics import as_pair
from jaxasr_interp.whisper.audio import SAMPLE_RATE, load_audio, log_mel

SAMPLES_PER_POSITION = 320  # 16 kHz x 20 ms: an encoder position is two 160-sample mel hops


@functools.partial(jax.jit, static_argnames=("cfg",))
def latents(params, x, *, cfg):
    """Inference latents ``[n, d_sae]`` of rows ``x [n, d_in]`` (jitted :func:`.model.encode`)."""
    return M.encode(params, jnp.asarray(x, jnp.float32), cfg)


def encode_rows(params, x, cfg, bucket: int = 1024) -> np.ndarray:
    """:func:`latents` of ``x [n, d_in]`` as numpy, the rows padded to a multiple of ``bucket``
    so that shards of any size share a few compiled programs."""
    n = x.shape[0]
    pad = -n % bucket
    x = np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]) if pad else x
    return np.asarray(latents(params, x, cfg=cfg))[:n]


def per_clip_sums(values, clip, n_clips: int) -> np.ndarray:
    """``[n_clips, ...]``: the rows of ``values`` summed per clip (a shard holds few clips)."""
    out = np.zeros((n_clips,) + values.shape[1:])
    for c in np.unique(clip):
        out[c] = values[clip == c].sum(0)
    return out


def _layer_rows(store, shard: int, cfg, site):
    data = store.shard(shard, site or cfg.site or None)
    return data["acts"][store.layers.index(cfg.layer)], data["clip"], data["pos"]


@dataclasses.dataclass(frozen=True)
class TopActivations:
    """``values``, ``clip``, ``pos``: ``[d_sae, k]``, each latent's rows, largest first;
    ``fires [d_sae]``: on how many of the ``n_rows`` stored rows each latent is positive."""

    values: np.ndarray
    clip: np.ndarray
    pos: np.ndarray
    fires: np.ndarray
    n_rows: int

    def of(self, latent: int) -> list[tuple[float, int, int]]:
        """``(value, clip, pos)`` of one latent's filled slots."""
        keep = self.clip[latent] >= 0
        return [(float(v), int(c), int(p)) for v, c, p in
                zip(self.values[latent][keep], self.clip[latent][keep], self.pos[latent][keep])]


def _per_clip_max(z, clip, pos):
    """Each clip's largest row per latent: values, clips and positions ``[n_clips, d_sae]``."""
    ids = np.unique(clip)
    vals, poss = [], []
    for c in ids:
        rows = np.flatnonzero(clip == c)
        best = np.argmax(z[rows], axis=0)
        vals.append(z[rows[best], np.arange(z.shape[1])])
        poss.append(pos[rows[best]])
    return np.stack(vals), np.broadcast_to(ids[:, None], (ids.size, z.shape[1])), np.stack(poss)


def _merge(best, cand, k):
    """Keep the ``k`` largest of the running best and a shard's candidates, per latent."""
    vals, clips, poss = (np.concatenate([b, c], axis=1) for b, c in zip(best, cand))
    order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
    return tuple(np.take_along_axis(a, order, axis=1) for a in (vals, clips, poss))


def top_activations(store, sae, *, k: int = 8, distinct_clips: bool = True, site: str | None = None
                    ) -> TopActivations:
    """Every latent's ``k`` largest stored rows (module docstring); ``sae`` a
    :class:`~.train.TrainedSAE` or ``(params, config)`` reading ``config.layer``."""
    params, cfg = as_pair(sae)
    best = (np.zeros((cfg.d_sae, 0), np.float32),) + (np.zeros((cfg.d_sae, 0), np.int64),) * 2  # values, clip, pos
    fires, n_rows = np.zeros(cfg.d_sae, np.int64), 0
    for i in range(store.n_shards):
        x, clip, pos = _layer_rows(store, i, cfg, site)
        z = encode_rows(params, x, cfg)
        fires, n_rows = fires + (z > 0).sum(0), n_rows + z.shape[0]
        if distinct_clips:
            cand = _per_clip_max(z, clip, pos)
            cand = (cand[0].T, cand[1].T.astype(np.int64), cand[2].T.astype(np.int64))
        else:
            top = np.argsort(-z, axis=0, kind="stable")[:k].T  # [d_sae, k] row indices
            cand = (np.take_along_axis(z.T, top, axis=1), clip[top].astype(np.int64), pos[top].astype(np.int64))
        best = _merge(best, cand, k)
    vals, clips, poss = best
    on = vals > 0
    return TopActivations(np.where(on, vals, 0.0).astype(np.float32), np.where(on, clips, -1),
                          np.where(on, poss, -1), fires, n_rows)


def clip_stats(store, sae, *, site: str | None = None) -> dict:
    """Per clip (the store's item order): ``sums`` and ``fires`` ``[n_clips, d_sae]`` (each
    latent's summed activation and number of rows where it is positive) over its ``rows``."""
    params, cfg = as_pair(sae)
    n_clips = len(store.meta["items"])
    sums, fires = np.zeros((n_clips, cfg.d_sae)), np.zeros((n_clips, cfg.d_sae), np.int64)
    rows = np.zeros(n_clips, np.int64)
    for i in range(store.n_shards):
        x, clip, _ = _layer_rows(store, i, cfg, site)
        z = encode_rows(params, x, cfg)
        sums += per_clip_sums(z.astype(np.float64), clip, n_clips)
        fires += per_clip_sums(z > 0, clip, n_clips).astype(np.int64)
        rows += np.bincount(clip, minlength=n_clips)
    return dict(sums=sums, fires=fires, rows=rows)


def clip_means(store, sae, *, site: str | None = None) -> np.ndarray:
    """``[n_clips, d_sae]``: each clip's mean latent activation over its stored rows (a clip
    with no rows: zeros)."""
    stats = clip_stats(store, sae, site=site)
    return stats["sums"] / np.maximum(stats["rows"], 1)[:, None]


def snippet(audio, pos: int, seconds: float = 1.0) -> tuple[np.ndarray, float]:
    """``(wave, start in seconds)``: ``seconds`` of ``audio`` (a path or 16 kHz waveform)
    centred on encoder position ``pos`` (module docstring), cut at the clip's ends."""
    wave = load_audio(audio)
    centre = (pos + 0.5) * SAMPLES_PER_POSITION
    half = seconds * SAMPLE_RATE / 2
    start = int(max(0, round(centre - half)))
    end = int(min(wave.size, round(centre + half)))
    return wave[start:end], start / SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Trace:
    """One clip's latent activations ``values [T, n_latents]`` at ``positions [T]``; ``times``
    (seconds: a frame's centre, encoder) or ``labels`` (the predicted tokens, decoder); the
    clip's ``mel`` and ``seconds`` for plotting."""

    values: np.ndarray
    positions: np.ndarray
    times: np.ndarray | None
    labels: list | None
    mel: np.ndarray
    seconds: float


def latent_trace(model, sae, audio, latent_ids=None, *, max_new_tokens: int | None = None, dtype=jnp.float32,
                 precision: str | None = "highest") -> Trace:
    """The activation of ``latent_ids`` (default: every latent) over one clip (module docstring),
    the model run in ``dtype`` (None: its storage dtype) at ``precision``."""
    from jaxasr_interp.core.dtypes import as_precision, compute_dtype
    from jaxasr_interp.sae.store import _decoder_acts, _encoder_acts, _greedy
    from jaxasr_interp.whisper.tokenizer import cut_at_eot, teacher_tokens
    params, cfg = as_pair(sae)
    wave = load_audio(audio)
    mel = log_mel(wave, n_mels=model.dims.n_mels)
    dims, site, sites, layers = model.dims, cfg.site, (cfg.site,), (cfg.layer,)
    ids = np.arange(cfg.d_sae) if latent_ids is None else np.atleast_1d(np.asarray(latent_ids))
    num = dict(dtype=compute_dtype(dtype, model.params), precision=as_precision(precision))
    if site.startswith("encoder."):
        acts = _encoder_acts(model.params, mel[None], dims=dims, sites=sites, layers=layers, **num)[site][0, 0]
        positions, labels = np.arange(audio_positions(wave.size, dims.n_audio_ctx)), None
        times = (positions + 0.5) * SAMPLES_PER_POSITION / SAMPLE_RATE
    else:
        tok = model.tokenizer
        prompt = tok.prompt()
        af, out = _greedy(model.params, mel[None], jnp.asarray(prompt, jnp.int32), tok.eot, dims=dims,
                          max_new_tokens=max_new_tokens or dims.n_text_ctx // 2, **num)
        row = cut_at_eot(np.asarray(out)[0], tok.eot)
        tokens = teacher_tokens(prompt, row, tok.eot)
        acts = _decoder_acts(model.params, af, jnp.asarray([tokens], jnp.int32), dims=dims, sites=sites,
                             layers=layers, **num)[site][0, 0]
        positions, times = np.arange(len(prompt) - 1, len(tokens) - 1), None
        labels = [tok.decode([t]) if t != tok.eot else "<|endoftext|>" for t in tokens[len(prompt):]]
    x = np.asarray(acts, np.float32)[positions].reshape(positions.size, -1)
    z = encode_rows(params, x, cfg)[:, ids]
    return Trace(z, positions, times, labels, np.asarray(mel), wave.size / SAMPLE_RATE)


def token_attribution(model, sae, latent: int, *, k: int = 10) -> dict:
    """``{"raised": [(token, score)], "lowered": [...]}``: the ``k`` tokens whose logits the
    latent's decoder direction raises (lowers) most (module docstring; decoder sites only)."""
    params, cfg = as_pair(sae)
    if not cfg.site.startswith("decoder."):
        raise ValueError(f"token attribution needs a decoder site; this SAE reads {cfg.site!r} (an "
                         "encoder direction reaches the logits only through cross-attention)")
    d = np.asarray(params["W_dec"][latent], np.float64)
    dec = model.params["decoder"]
    gamma = np.asarray(dec["ln"]["scale"], np.float64)
    scores = np.asarray(dec["token_embedding"]["embedding"], np.float64) @ ((d - d.mean()) * gamma)
    order = np.argsort(-scores, kind="stable")
    tok = model.tokenizer

    def named(ids):
        return [(tok.decode([int(i)]) or tok.tokenizer.id_to_token(int(i)) or f"<{int(i)}>", float(scores[i]))
                for i in ids]

    return {"raised": named(order[:k]), "lowered": named(order[::-1][:k])}
