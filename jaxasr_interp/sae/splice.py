"""The SAE's cost to the model: splice its reconstruction back in at its site and measure the
change in cross-entropy and in the greedy transcripts.

``splice_cost(model, audio, {layer: sae}, site=...)`` runs, per batch of clips:

1. the clean model: greedy transcript, then a teacher-forced pass over ``prompt + transcript
   + <|endoftext|>`` capturing ``site`` at every layer;
2. per layer ``l``: the SAE's reconstruction of the clean activation, spliced in with a
   ``replace`` edit at ``site``, layer ``l`` (``jai.replace(recon, layers=[l], mask=...)``).
   Only the positions the SAE is trained on are replaced: encoder positions that hold audio
   (padding frames keep their clean values), decoder positions from the last prompt token on.

It reports, per layer, the cross-entropy of the clean transcript's tokens (and end-of-text)
under the clean and the spliced model, their difference, and the WER of the spliced model's
greedy transcript against the clean one (and against ``references`` when given), text
normalised with Whisper's English normaliser.

**The reconstruction is a fixed replace, computed from a clean capture.** An edit's data is an
array, not a function of the activation, so the reconstruction ``sae(a_l)`` is computed from
the clean run's ``a_l`` first. For one layer this is exact: an edit at layer ``l`` leaves
layers ``0..l-1``, hence ``a_l`` itself, as in the clean run. It holds for the teacher-forced
pass (encoder and decoder sites) and for greedy decoding after an encoder splice (the encoder
runs once). Greedy decoding with a decoder splice cannot use a fixed replace (each new token
changes the activations after it), so there the splice is live: every step captures the
site's clean value on the current prefix, reconstructs it and reruns the decoder with the
replace, without a KV cache (two decoder passes per generated token).

``jai.transcribe(..., edits=)`` applies one edit to every clip of a batch (``encode_batch``
closes over it), so the per-clip reconstructions here go through this module's own batched
encode (``vmap`` over mels and edit data) and ``greedy_decode``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.edits import replace
from jaxasr_interp.probes.features import audio_positions
from jaxasr_interp.sae import model as M
from jaxasr_interp.sae.metrics import as_pair
from jaxasr_interp.sae.store import check_sites
from jaxasr_interp.whisper.audio import load_audio, log_mel
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.whisper.text_metrics import normalize, word_errors
from jaxasr_interp.whisper.tokenizer import cut_at_eot, teacher_tokens


@dataclasses.dataclass(frozen=True)
class _Recon:
    """A hashable reconstruction ``fn(params, x [n, D]) -> [n, D]`` (a static jit argument)."""

    cfg: M.SAEConfig | None = None
    fn: Callable | None = None

    def __call__(self, params, x):
        return M.reconstruct(params, x, self.cfg) if self.cfg is not None else self.fn(x)


def _recon(sae) -> tuple[_Recon, dict]:
    if callable(sae) and not hasattr(sae, "params"):
        return _Recon(fn=sae), {}
    params, cfg = as_pair(sae)
    return _Recon(cfg=cfg), jax.tree_util.tree_map(jnp.asarray, params)


def _spliced(fn, sae_params, acts, x_shape_mask, site, layer):
    """The replace edit of one clip: ``acts [T, ...]`` reconstructed where the mask is set."""
    rec = fn(sae_params, acts.reshape(acts.shape[0], -1)).reshape(acts.shape).astype(acts.dtype)
    return {site: replace(rec[None], layers=[layer], mask=x_shape_mask[None])}


def _token_ce(logits, tokens, start, n):
    """Summed cross-entropy of ``tokens[start + 1 .. start + n]`` predicted at ``start ..``."""
    logp = jax.nn.log_softmax(logits[:-1], axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[1:, None], axis=-1)[:, 0]
    pos = jnp.arange(nll.shape[0])
    return jnp.sum(jnp.where((pos >= start) & (pos < start + n), nll, 0.0))


@functools.partial(jax.jit, static_argnames=("dims", "site", "max_new_tokens"))
def _clean(params, mels, prompt, eot, *, dims, site, max_new_tokens):
    enc_site = site.startswith("encoder.")
    af, enc = jax.vmap(lambda m: encode(params, m, dims=dims, capture=(site,) if enc_site else ()))(mels)
    bias = logit_bias(dims.n_vocab, ())
    return af, (enc[site] if enc_site else None), greedy_decode(
        params, af, prompt, eot, bias, bias, dims=dims, max_new_tokens=max_new_tokens)


@functools.partial(jax.jit, static_argnames=("dims", "site"))
def _teacher(params, af, tokens, start, n, *, dims, site):
    def one(a, t, s, k):
        logits, acts = decode(params, t, a, dims=dims, capture=(site,) if site.startswith("decoder.") else ())
        return _token_ce(logits, t, s, k), acts.get(site)
    return jax.vmap(one)(af, tokens, start, n)


@functools.partial(jax.jit, static_argnames=("dims", "site", "fn", "max_new_tokens"))
def _encoder_splice(params, mels, acts, n_valid, tokens, start, n, prompt, eot, sae_params, *,
                    dims, site, layer, fn, max_new_tokens):
    def one(mel, a, nv, t, s, k):
        mask = jnp.arange(a.shape[1]) < nv  # a: [L, S, ...]; padding frames stay clean
        af, _ = encode(params, mel, dims=dims, edits=_spliced(fn, sae_params, a[layer], mask, site, layer))
        return af, _token_ce(decode(params, t, af, dims=dims)[0], t, s, k)
    af, ce = jax.vmap(one)(mels, acts, n_valid, tokens, start, n)
    bias = logit_bias(dims.n_vocab, ())
    return ce, greedy_decode(params, af, prompt, eot, bias, bias, dims=dims, max_new_tokens=max_new_tokens)


@functools.partial(jax.jit, static_argnames=("dims", "site", "fn", "max_new_tokens"))
def _decoder_splice(params, af, acts, tokens, start, n, prompt, eot, sae_params, *,
                    dims, site, layer, fn, max_new_tokens):
    n_prompt = prompt.shape[0]

    def teacher(a, act, t, s, k):
        mask = jnp.arange(t.shape[0]) >= n_prompt - 1
        edits = _spliced(fn, sae_params, act[layer], mask, site, layer)
        return _token_ce(decode(params, t, a, dims=dims, edits=edits)[0], t, s, k)

    def live(a):  # uncached greedy, the splice recomputed on every prefix
        width = n_prompt + max_new_tokens
        mask = jnp.arange(width) >= n_prompt - 1

        def step(i, carry):
            toks, done = carry
            act = decode(params, toks, a, dims=dims, capture=(site,))[1][site][layer]
            edits = _spliced(fn, sae_params, act, mask, site, layer)
            nxt = jnp.argmax(decode(params, toks, a, dims=dims, edits=edits)[0][n_prompt - 1 + i])
            nxt = jnp.where(done, eot, nxt).astype(jnp.int32)
            return toks.at[n_prompt + i].set(nxt), done | (nxt == eot)

        toks = jnp.full((width,), eot, jnp.int32).at[:n_prompt].set(prompt)
        return jax.lax.fori_loop(0, max_new_tokens, step, (toks, False))[0][n_prompt:]

    return jax.vmap(teacher)(af, acts, tokens, start, n), jax.vmap(live)(af)


def _batch(model, paths, batch_size, max_new_tokens, site):
    """Clean pass of one batch (padded to ``batch_size``): what every layer's splice needs."""
    dims, tok = model.dims, model.tokenizer
    audios = [load_audio(p) for p in paths]
    mels = [log_mel(a, n_mels=dims.n_mels) for a in audios]
    mels = jnp.stack(mels + [mels[-1]] * (batch_size - len(mels)))
    n_valid = [audio_positions(a.size, dims.n_audio_ctx) for a in audios]
    prompt = jnp.asarray(tok.prompt(), jnp.int32)
    af, enc_acts, ids = _clean(model.params, mels, prompt, tok.eot, dims=dims, site=site,
                               max_new_tokens=max_new_tokens)
    ids = [cut_at_eot(row, tok.eot) for row in np.asarray(ids)]
    width = min(dims.n_text_ctx, prompt.shape[0] + max_new_tokens + 1)
    tokens = jnp.asarray([teacher_tokens(tok.prompt(), row, tok.eot, width) for row in ids], jnp.int32)
    start = jnp.full((batch_size,), prompt.shape[0] - 1, jnp.int32)
    n = jnp.asarray([len(row) + 1 for row in ids], jnp.int32)  # transcript + end-of-text
    ce, dec_acts = _teacher(model.params, af, tokens, start, n, dims=dims, site=site)
    return dict(mels=mels, af=af, acts=enc_acts if dec_acts is None else dec_acts, ids=ids,
                n_valid=jnp.asarray(n_valid + [n_valid[-1]] * (batch_size - len(n_valid)), jnp.int32),
                tokens=tokens, start=start, n=n, ce=np.asarray(ce), prompt=prompt, keep=len(paths))


def splice_cost(model, audio: Sequence, saes: Mapping[int, object], *, site: str = "encoder.resid_post",
                batch_size: int = 8, max_new_tokens: int | None = None, references: Sequence[str] | None = None,
                normalizer: str | None = "english") -> list[dict]:
    """Per layer of ``saes`` (layer -> a :class:`~.train.TrainedSAE`, a ``(params, config)``
    pair, or any function ``x [n, D] -> x_hat``), the splice's cost (module docstring):
    ``{"layer", "ce_clean", "ce_spliced", "delta_ce", "wer", "wer_ref_clean", "wer_ref_spliced"}``
    (cross-entropies in nats per token; the reference WERs only with ``references``)."""
    check_sites((site,), model.dims)
    items, tok = list(audio), model.tokenizer
    max_new_tokens = max_new_tokens or model.dims.n_text_ctx // 2
    recons = {int(layer): _recon(s) for layer, s in saes.items()}
    totals = {layer: dict(ce_clean=0.0, ce_spliced=0.0, tokens=0, err=0, words=0, ref_c=0, ref_s=0, ref_w=0)
              for layer in recons}
    norm = lambda text: normalize(text, normalizer)
    for b in range(0, len(items), batch_size):
        clean = _batch(model, items[b:b + batch_size], batch_size, max_new_tokens, site)
        keep, clean_texts = clean["keep"], [norm(tok.decode(ids)) for ids in clean["ids"]]
        refs = None if references is None else [norm(r) for r in references[b:b + keep]]
        for layer, (fn, sae_params) in recons.items():
            ce, ids = _splice_layer(model, clean, site, layer, fn, sae_params, max_new_tokens)
            t = totals[layer]
            t["ce_clean"] += float(clean["ce"][:keep].sum())
            t["ce_spliced"] += float(np.asarray(ce)[:keep].sum())
            t["tokens"] += int(np.asarray(clean["n"])[:keep].sum())
            texts = [norm(tok.decode(cut_at_eot(row, tok.eot))) for row in np.asarray(ids)[:keep]]
            for i, text in enumerate(texts):
                e, w = word_errors(clean_texts[i], text)
                t["err"], t["words"] = t["err"] + e, t["words"] + w
                if refs is not None:
                    (ec, w), (es, _) = word_errors(refs[i], clean_texts[i]), word_errors(refs[i], text)
                    t["ref_c"], t["ref_s"], t["ref_w"] = t["ref_c"] + ec, t["ref_s"] + es, t["ref_w"] + w
    return [_row(layer, t, references is not None) for layer, t in totals.items()]


def _splice_layer(model, clean, site, layer, fn, sae_params, max_new_tokens):
    # the layer is data: every layer's splice (one SAE config) runs one compiled program
    common = dict(dims=model.dims, site=site, layer=jnp.int32(layer), fn=fn, max_new_tokens=max_new_tokens)
    eot = model.tokenizer.eot
    if site.startswith("encoder."):
        return _encoder_splice(model.params, clean["mels"], clean["acts"], clean["n_valid"], clean["tokens"],
                               clean["start"], clean["n"], clean["prompt"], eot, sae_params, **common)
    return _decoder_splice(model.params, clean["af"], clean["acts"], clean["tokens"], clean["start"],
                           clean["n"], clean["prompt"], eot, sae_params, **common)


def _row(layer, t, with_refs) -> dict:
    rate = lambda e, w: e / w if w else float(e > 0)
    ce_c, ce_s = t["ce_clean"] / max(t["tokens"], 1), t["ce_spliced"] / max(t["tokens"], 1)
    row = dict(layer=layer, ce_clean=ce_c, ce_spliced=ce_s, delta_ce=ce_s - ce_c, wer=rate(t["err"], t["words"]))
    if with_refs:
        row.update(wer_ref_clean=rate(t["ref_c"], t["ref_w"]), wer_ref_spliced=rate(t["ref_s"], t["ref_w"]))
    return row
