"""Cross-attention alignment heads: which decoder heads move through the audio as the tokens do?

Whisper's word timestamps run dynamic time warping over the cross-attention of a few
"alignment heads" (openai/whisper's ``_ALIGNMENT_HEADS``), heads whose attention advances
through the audio as the transcript advances. This finds them from the model alone: each clip
is transcribed greedily, the model's own transcript is teacher-forced, and
``decoder.cross_attn.pattern`` ``[L, H, T, S]`` is kept at the rows of the text tokens (the
prompt left out) and the columns of the frames that hold the clip (``ceil(samples / 320)``
encoder positions of 20 ms; the rows renormalised over them, as openai's ``find_alignment``
does). Per head and clip (:func:`monotonicity`):

- ``rho_argmax``: Spearman correlation between token index and the frame of maximal attention;
- ``rho_com``: the same with the attention's centre of mass;
- ``forward``: the fraction of consecutive tokens whose argmax frame moves strictly forward.

Each is averaged over clips with a 95% bootstrap interval over clips; heads are ranked by
``rho_argmax``. Controls: the same scores with the token rows shuffled (seeded), the value a
head reaches by chance; and ``follows`` (:func:`follows_audio`), the fraction of tokens whose
peak frame moves by 50 +- 3 frames when the clip is delayed by 1 s of silence (same tokens),
which tells a head that follows the sound from one that steps through positions at a fixed
rate (monotonic too, but blind to the audio). The ranking is compared with the published heads of tiny.en, tiny, base.en
and base: how many of the ``m`` published heads are in our top ``m``, against the ``m^2 / N``
expected of a random ranking (and the hypergeometric probability of doing at least as well).
One documented command writes ``results/alignment_heads_<model>.json``::

    python -m jaxasr_interp.experiments.alignment_heads --model tiny.en --out results/
"""

from __future__ import annotations

import base64
import gzip
import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from scipy.stats import hypergeom, mannwhitneyu, rankdata

import jaxasr_interp as jai
from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.experiments.attention_window import Clip, module_main, speech_clips, write
from jaxasr_interp.whisper.tokenizer import teacher_tokens

SITE = "decoder.cross_attn.pattern"
SAMPLES_PER_FRAME = 320  # 16 kHz x 20 ms per encoder position
MONOTONIC = ("rho_argmax", "rho_com", "forward")
MEASURES = MONOTONIC + ("follows",)
DELAY_FRAMES, TOLERANCE = 50, 3  # the follows-the-audio control: 1 s of silence first, +-60 ms
COMMAND = "python -m jaxasr_interp.experiments.alignment_heads --model {model} --out results/"
# openai/whisper (MIT), whisper/__init__.py: base85 of a gzipped boolean [n_text_layer, n_text_head]
PUBLISHED = {
    "tiny.en": b"ABzY8J1N>@0{>%R00Bk>$p{7v037`oCl~+#00",
    "tiny": b"ABzY8bu8Lr0{>%RKn9Fp%m@SkK7Kt=7ytkO",
    "base.en": b"ABzY8;40c<0{>%RzzG;p*o+Vo09|#PsxSZm00",
    "base": b"ABzY8KQ!870{>%RzyTQH3`Q^yNP!>##QT-<FaQ7m",
}


def published_heads(name: str, n_layer: int, n_head: int) -> np.ndarray | None:
    """openai/whisper's alignment heads of ``name`` as a boolean ``[n_layer, n_head]`` mask."""
    if name not in PUBLISHED:
        return None
    mask = np.frombuffer(gzip.decompress(base64.b85decode(PUBLISHED[name])), dtype=bool)
    return mask.reshape(n_layer, n_head).copy()


def spearman(x, y) -> np.ndarray:
    """Spearman correlation of each row of ``x`` ``[..., T]`` with ``y`` ``[T]`` (ties
    averaged); 0 where either is constant."""
    rx = rankdata(x, axis=-1)
    ry = rankdata(y)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean()
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum())
    return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1), 0.0)


def monotonicity(pattern) -> dict[str, np.ndarray]:
    """Scores of ``pattern`` ``[..., T, S]`` (text tokens x speech frames) -> each ``[...]``."""
    p = np.asarray(pattern, np.float64)
    p = p / p.sum(-1, keepdims=True)
    peak = p.argmax(-1)
    com = (p * np.arange(p.shape[-1])).sum(-1)
    order = np.arange(p.shape[-2])
    return {"rho_argmax": spearman(peak, order), "rho_com": spearman(com, order),
            "forward": (np.diff(peak, axis=-1) > 0).mean(-1)}


def clip_patterns(model, clips: list[Clip], *, max_new_tokens: int = 64, delay: int = DELAY_FRAMES,
                  precision: str | None = "highest") -> list[tuple[np.ndarray, np.ndarray]]:
    """Each clip's cross-attention ``[L, H, T_text, S_speech]`` on its own greedy transcript,
    and the same tokens' attention with the clip delayed by ``delay`` frames of digital silence
    ``[L, H, T_text, delay + S_speech]``."""
    tok = model.tokenizer
    ids = jai.transcribe_ids(model, [c.audio for c in clips], batch_size=len(clips),
                             max_new_tokens=max_new_tokens, precision=precision)
    prompt = tok.prompt(language="en")
    width = max(len(prompt) + len(i) + 1 for i in ids)  # one width: one compiled program
    out = []
    for clip, text_ids in zip(clips, ids):
        tokens = jnp.asarray(teacher_tokens(prompt, text_ids, tok.eot, width), jnp.int32)
        frames = math.ceil(clip.audio.size / SAMPLES_PER_FRAME)
        rows = slice(len(prompt), len(prompt) + len(text_ids))
        silence = np.zeros(delay * SAMPLES_PER_FRAME, np.float32)
        both = []
        for audio, cols in ((clip.audio, frames), (np.concatenate([silence, clip.audio]), delay + frames)):
            mel = jai.log_mel(audio, n_mels=model.dims.n_mels)
            _, acts = jai.forward(model.params, mel, tokens, dims=model.dims, capture=[SITE],
                                  dtype=model.dtype, precision=precision)
            both.append(np.asarray(acts[SITE][:, :, rows, :min(cols, model.dims.n_audio_ctx)]))
        out.append(tuple(both))
    return out


def follows_audio(pattern, delayed, delay: int = DELAY_FRAMES, tol: int = TOLERANCE) -> np.ndarray:
    """Fraction of tokens whose peak frame moves by ``delay +- tol`` when the audio is delayed
    by ``delay`` frames: 1 for a head that tracks the sound, 0 for one that tracks positions."""
    shift = np.asarray(delayed).argmax(-1) - np.asarray(pattern).argmax(-1)
    return (np.abs(shift - delay) <= tol).mean(-1)


def _shuffled(pattern: np.ndarray, rng) -> np.ndarray:
    return pattern[..., rng.permutation(pattern.shape[-2]), :]


def _per_head(scores: np.ndarray, *, n_boot: int, seed: int) -> list:
    """``[n_clips, L, H]`` -> per head ``interval`` dicts, ``[L][H]``."""
    n, n_layer, n_head = scores.shape
    return [[interval(bootstrap_ci(scores[:, l, h], n_boot=n_boot, seed=seed), n) for h in range(n_head)]
            for l in range(n_layer)]


def overlap(ranking: list[tuple[int, int]], published: np.ndarray) -> dict:
    """How many of the ``m`` published heads are in the top ``m`` of ``ranking``, with the
    random-ranking baseline (expected ``m^2 / N``; hypergeometric ``P(X >= found)``), and the
    AUC: the chance that a published head outranks an unpublished one (0.5 at random; its
    one-sided Mann-Whitney ``p``)."""
    m, total = int(published.sum()), published.size
    found = sum(bool(published[l, h]) for l, h in ranking[:m])
    ranks = [i + 1 for i, (l, h) in enumerate(ranking) if published[l, h]]
    others = [i + 1 for i, (l, h) in enumerate(ranking) if not published[l, h]]
    test = mannwhitneyu(others, ranks, alternative="greater")
    return {"published": [[int(l), int(h)] for l, h in np.argwhere(published)], "m": m, "heads": total,
            "in_top_m": found, "random_expected": round(m * m / total, 4),
            "p_at_least": round(float(hypergeom.sf(found - 1, total, m, m)), 6),
            "published_ranks": ranks, "auc": round(float(test.statistic) / (m * len(others)), 6),
            "auc_p": round(float(test.pvalue), 6)}


def run(model, clips: list[Clip] | None = None, *, name: str | None = None, max_new_tokens: int = 64,
        min_tokens: int = 3, n_boot: int = 1000, seed: int = 0, out=None,
        precision: str | None = "highest") -> dict:
    """Score every head on ``clips`` (those with at least ``min_tokens`` text tokens); write
    ``out/alignment_heads_<name>.json`` when ``out`` is given. Returns the results dict."""
    clips = speech_clips() if clips is None else clips
    name = name or Path(str(model.source)).name
    pairs = clip_patterns(model, clips, max_new_tokens=max_new_tokens, precision=precision)
    used = [i for i, (p, _) in enumerate(pairs) if p.shape[-2] >= min_tokens]
    rng = np.random.default_rng(seed)
    scores = {m: np.stack([monotonicity(pairs[i][0])[m] for i in used]) for m in MONOTONIC}
    scores["follows"] = np.stack([follows_audio(*pairs[i]) for i in used])
    null = {m: np.stack([monotonicity(_shuffled(pairs[i][0], rng))[m] for i in used]) for m in MONOTONIC}
    heads = {m: _per_head(scores[m], n_boot=n_boot, seed=seed) for m in MEASURES}
    n_layer, n_head = scores["rho_argmax"].shape[1:]
    rankings = {m: sorted(np.ndindex(n_layer, n_head), key=lambda lh: -scores[m].mean(0)[lh])
                for m in MEASURES}
    published = published_heads(name, n_layer, n_head)
    result = {"experiment": "alignment_heads", "model": name,
              "config": dict(site=SITE, measures=list(MEASURES), rank_by="rho_argmax", min_tokens=min_tokens,
                             max_new_tokens=max_new_tokens, n_boot=n_boot, seed=seed,
                             delay_frames=DELAY_FRAMES, tolerance_frames=TOLERANCE,
                             control="token rows shuffled per clip", command=COMMAND.format(model=name)),
              "n": len(used), "n_layer": n_layer, "n_head": n_head,
              "clips": [{"name": c.name, "tokens": int(p.shape[-2]), "frames": int(p.shape[-1]),
                         "used": i in used} for i, (c, (p, _)) in enumerate(zip(clips, pairs))],
              "heads": heads,
              "shuffled": {m: np.round(null[m].mean(0), 6).tolist() for m in MONOTONIC},
              "ranking": {m: [[int(l), int(h)] for l, h in r] for m, r in rankings.items()},
              "published": None if published is None else
              {m: overlap(r, published) for m, r in rankings.items()}}
    if out is not None:
        write(result, out)
    return result


def _ci(c: dict) -> str:
    return f"{c['value']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"


def markdown(result: dict) -> str:
    """The per-head table of docs/beyond_paper.md and the overlap line, from one results file."""
    heads, pub = result["heads"], result["published"]
    marked = {tuple(x) for x in pub["rho_argmax"]["published"]} if pub else set()
    best_null = max(max(row) for row in result["shuffled"]["rho_argmax"])
    lines = [f"**{result['model']}**: n = {result['n']} clips; shuffled-token control: best head "
             f"rho_argmax {best_null:.2f}.", ""]
    for m, o in (pub or {}).items():
        lines.append(f"- ranked by {m}: {o['in_top_m']} of the {o['m']} published heads in our top {o['m']} "
                     f"(random ranking: {o['random_expected']:.2f} expected, P(>= {o['in_top_m']}) = "
                     f"{o['p_at_least']:.2g}); published heads' ranks {o['published_ranks']} of {o['heads']}, "
                     f"AUC {o['auc']:.2f} (p = {o['auc_p']:.2g}).")
    lines += ["", "| rank | layer.head | rho_argmax | rho_com | forward | follows | published |",
              "|---|---|---|---|---|---|---|"]
    for i, (l, h) in enumerate(result["ranking"]["rho_argmax"]):
        cells = " | ".join(_ci(heads[m][l][h]) for m in MEASURES)
        lines.append(f"| {i + 1} | {l}.{h} | {cells} | {'yes' if (l, h) in marked else ''} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    return module_main(argv, description=__doc__.split("\n")[0], experiment="alignment_heads", run=run,
                       markdown=markdown, synth=24)

if __name__ == "__main__":
    main()
