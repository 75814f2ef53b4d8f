"""Repetition hallucinations: find utterances where the model loops, then patch the
cross-attention of every decoder layer and every cross-attention head towards a white-noise
reference over an alpha grid and count the loops each patch resolves.

The candidates and which of them loop: :mod:`.repetition_pool` (the built-in noisy pool, or
the user's files). A patch *resolves* a loop when the patched transcript does not loop and is
intact: its WER against the clean transcript with the loop kept once
(:func:`.patching_decode.collapse_repeats`) is at most ``intact_wer``.

Patches (one :func:`.patching_decode.decode_sweep` per item, one compiled program for all
items): ``cross_attn_out`` of each layer x alpha, ``cross_attn.z`` of each (layer, head) x
alpha, then the best layer and the best head together at each alpha. The reference run is the
white noise teacher-forced with the clean tokens (padded to a fixed length). The report:
:mod:`.repetition_report`.

Resumable (:mod:`.stages`): with ``work_dir``, the transcription (per batch), the sweep and
the best-pair check (per looping item) are saved as they finish; a rerun with the same
directory and configuration resumes and gives identical results. Every model call runs in
``dtype`` at matmul ``precision`` (:mod:`jaxasr_interp.core.dtypes`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.grid import join_sites
from jaxasr_interp.experiments.repetition_pool import (  # noqa: F401 (their old home)
    candidate_pool, files_pool, find_loops, items_from_audio, split_loops, transcribe_pool)
from jaxasr_interp.experiments.repetition_report import PAPER, format_summary, write_report  # noqa: F401
from jaxasr_interp.experiments.stages import Work, as_texts, describe, digest, numerics
from jaxasr_interp.patching.decoding import collapse_repeats, decode_sweep, has_repetition, ids_to_text, word_error_rate
from jaxasr_interp.patching.reference import white_noise
from jaxasr_interp.patching.sweeps import family_grid
from jaxasr_interp.whisper.tokenizer import teacher_tokens

ALPHAS = (0.25, 0.5, 0.75, 1.0)
FAMILY_LAYER, FAMILY_HEAD = "decoder.cross_attn", "decoder.cross_head"
SITE_LAYER, SITE_HEAD = "decoder.cross_attn_out", "decoder.cross_attn.z"  # the sites they patch


def resolved(patched: str, clean: str, intact_wer: float) -> bool:
    """No loop left, and the rest of the clean transcript kept."""
    return not has_repetition(patched) and word_error_rate(collapse_repeats(clean), patched) <= intact_wer


def patch_weights(dims, alphas):
    """Weights of the layer patches (layer x alpha), then the head patches (layer x head x
    alpha): {site: [P, L, ...]}, zero at the site a patch does not edit."""
    _, layer, _ = family_grid(FAMILY_LAYER, dims, alphas)
    _, head, _ = family_grid(FAMILY_HEAD, dims, alphas)
    return {site: jnp.asarray(w) for site, w in join_sites({SITE_LAYER: layer}, {SITE_HEAD: head}).items()}


def pair_weights(dims, alphas, layer: int, head: tuple[int, int]):
    """The best layer's cross-attention and the best (layer, head) together, at each alpha."""
    _, wl, _ = family_grid(FAMILY_LAYER, dims, alphas, layers=[layer])
    _, wh, _ = family_grid(FAMILY_HEAD, dims, alphas, layers=[head[0]], heads=[head[1]])
    return {SITE_LAYER: jnp.asarray(wl), SITE_HEAD: jnp.asarray(wh)}


class _Runner:
    """Everything one item's sweeps need, computed once per model."""

    def __init__(self, model, max_new_tokens: int, reference, chunk: int, numerics_: dict):
        from jaxasr_interp.whisper.api import encode_batch
        from jaxasr_interp.whisper.audio import load_audio, log_mel
        self.model, self.n_new, self.chunk, self.numerics = model, max_new_tokens, chunk, numerics_
        self.prompt = model.tokenizer.prompt()
        noise = white_noise() if reference is None else load_audio(reference)
        self.noise_features = encode_batch(model.params, log_mel(noise, n_mels=model.dims.n_mels)[None],
                                           dims=model.dims, **numerics_)[0]

    def __call__(self, item, weights) -> list[str]:
        from jaxasr_interp.whisper.api import encode_batch
        from jaxasr_interp.whisper.audio import log_mel
        from jaxasr_interp.whisper.model import decode
        m, tok, kw = self.model, self.model.tokenizer, self.numerics
        width = len(self.prompt) + self.n_new + 1  # fixed: one compiled program for every item
        tokens = jnp.asarray(teacher_tokens(self.prompt, item["ids"], tok.eot, width), jnp.int32)
        _, ref = decode(m.params, tokens, self.noise_features, dims=m.dims, capture=[SITE_LAYER, SITE_HEAD], **kw)
        features = encode_batch(m.params, log_mel(item["audio"], n_mels=m.dims.n_mels)[None], dims=m.dims, **kw)[0]
        ids = decode_sweep(m.params, features, jnp.asarray(self.prompt, jnp.int32), tok.eot, ref, weights,
                           dims=m.dims, max_new_tokens=self.n_new, chunk=self.chunk, **kw)
        return [ids_to_text(tok, row) for row in np.asarray(ids)]

    def texts(self, work: Work, stage: str, items: list, weights, key=None) -> list[list[str]]:
        """Each item's patched transcripts, one chunk of ``stage`` per item."""
        parts = work.map(stage, lambda item: dict(texts=np.asarray(self(item, weights))), items, key=key)
        return [as_texts(p["texts"]) for p in parts]


def run(model, *, pool=None, audio=None, alphas=ALPHAS, max_items: int = 16, max_new_tokens: int = 96,
        intact_wer: float = 0.3, reference=None, seed: int = 0, chunk: int = 16, work_dir=None, dtype=None,
        precision="highest") -> dict:
    """The whole experiment -> a result dict (see :func:`write_report`). The candidates are the
    user's files ``audio`` if given (paths: :func:`items_from_audio`; the result then also lists
    ``no_loop``, and has ``n_items`` 0 and a ``message`` when none loops), else ``pool``, else
    :func:`candidate_pool` of ``seed``. ``work_dir``: checkpoints, resumed on rerun (module
    docstring); ``dtype`` / ``precision``: of every model call."""
    num = numerics(model, dtype, precision)
    pool = files_pool(audio) if audio is not None else candidate_pool(seed) if pool is None else pool
    sources = [str(a) for a in audio] if audio is not None else [p["source"] for p in pool]
    settings = dict(alphas=list(alphas), max_items=max_items, max_new_tokens=max_new_tokens, intact_wer=intact_wer,
                    reference=None if reference is None else str(reference), chunk=chunk)
    work = Work(work_dir, dict(experiment="repetition", **describe(model, num), **settings, pool=sources,
                               pool_digest=digest([p["audio"] for p in pool])), what="repetition experiment")
    items = transcribe_pool(model, pool, max_new_tokens=max_new_tokens, work=work, **num)
    loops, no_loop = split_loops(items)
    head = dict(model=model.source, n_pool=len(sources), n_loops=len(loops), n_items=min(len(loops), max_items))
    tail = dict(pool_sources=sources, loop_sources=[it["source"] for it in loops])
    if audio is not None:
        tail["no_loop"] = no_loop
        if not loops:
            return dict(head, max_new_tokens=max_new_tokens, **tail, message=(
                f"no loop found in any of the {len(sources)} file(s) under {model.source}: nothing to patch"))
    elif not loops:
        raise ValueError(f"none of the {len(sources)} candidates loops under {model.source}; give more or harder audio")
    return dict(head, **sweep(model, loops[:max_items], alphas=alphas, max_new_tokens=max_new_tokens,
                              intact_wer=intact_wer, reference=reference, chunk=chunk, work=work, **num), **tail)


def _best(solved, n_l: int, n_h: int, n_a: int):
    """Resolved rates per layer [L, A] and head [L, H, A], the best layer and (layer, head)."""
    layer_rate = solved[:, : n_l * n_a].mean(0).reshape(n_l, n_a)
    head_rate = solved[:, n_l * n_a:].mean(0).reshape(n_l, n_h, n_a)
    best_head = np.unravel_index(int(np.argmax(head_rate.max(2))), (n_l, n_h))
    return layer_rate, head_rate, int(np.argmax(layer_rate.max(1))), (int(best_head[0]), int(best_head[1]))


def sweep(model, items: list[dict], *, alphas=ALPHAS, max_new_tokens: int = 96, intact_wer: float = 0.3,
          reference=None, chunk: int = 16, work: Work | None = None, dtype=None, precision="highest") -> dict:
    """Patch every looping item (``audio``, ``ids``, ``clean``, ``text``, ``source``) under every
    layer and head patch, then the best layer and head together -> the rates and per-item texts.
    ``work``: the run's work directory (:class:`.stages.Work`; None: in memory)."""
    dims, work = model.dims, Work(None, {}, what="repetition experiment") if work is None else work
    runner = _Runner(model, max_new_tokens, reference, chunk, numerics(model, dtype, precision))
    n_l, n_h, n_a = dims.n_text_layer, dims.n_text_head, len(alphas)
    texts = runner.texts(work, "sweeps", items, patch_weights(dims, alphas), key=[it["source"] for it in items])
    solved = np.array([[resolved(t, it["clean"], intact_wer) for t in out] for it, out in zip(items, texts)])
    # the weaker outcome: no loop left (whatever the rest says)
    removed = np.array([[bool(t.strip()) and not has_repetition(t) for t in out] for out in texts])
    layer_rate, head_rate, best_layer, best_head = _best(solved, n_l, n_h, n_a)
    pair = runner.texts(work, "best_pair", items, pair_weights(dims, alphas, best_layer, best_head),
                        key=dict(layer=best_layer, head=best_head))
    pair_solved = np.array([[resolved(t, it["clean"], intact_wer) for t in out] for it, out in zip(items, pair)])
    best_alpha = int(np.argmax(layer_rate[best_layer])) + best_layer * n_a
    return dict(alphas=list(alphas), intact_wer=intact_wer, max_new_tokens=max_new_tokens,
                layer_rate=layer_rate, head_rate=head_rate, pair_rate=pair_solved.mean(0),
                layer_loop_removed=removed[:, : n_l * n_a].mean(0).reshape(n_l, n_a).tolist(),
                head_loop_removed=removed[:, n_l * n_a:].mean(0).reshape(n_l, n_h, n_a).tolist(),
                best_layer=best_layer, best_head=best_head,
                items=[dict(source=it["source"], text=it["text"], clean=it["clean"], resolved_by=int(s.sum()),
                            loop_removed_by=int(r.sum()), best_layer_text=t[best_alpha])
                       for it, s, r, t in zip(items, solved, removed, texts)])
