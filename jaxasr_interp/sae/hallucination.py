"""Do a layer's speech / non-speech SAE latents drive what Whisper writes for non-speech audio?

Part 4 of :mod:`.study`. On the non-speech clips of a ``build_speech`` set, greedy transcripts
(plain argmax, :func:`.steer.edited_transcripts_many`: every clip's audio frames edited, all
conditions of a layer from one clean capture per batch) under:

* ``ablate_nonspeech``: the ``ablate_top`` latents with the lowest AUROC for speech (those most
  active on non-speech) removed, ``a - sum_i z_i(a) d_i`` (exact for one layer, :mod:`.steer`);
* ``steer_speech_xF``: the ``top`` latents with the highest AUROC added, each at ``F`` times its
  mean activation when it fires on speech frames (``F`` in ``factors``);
* their controls, ``ablate_control`` and ``steer_control_xF``: random latents of matched
  activation. For each chosen latent one latent drawn among the 10 unchosen latents (that fire
  on those clips) nearest to it in the statistic that sets the edit's size (mean activation
  on the non-speech clips for ablation; mean activation when firing on speech, hence the same
  alpha, for steering); ``controls`` draws, each clip's score averaged over the draws.

Scores per clip: ``non_empty`` (the transcript has any text: the brief's hallucination) and
``words`` (non-empty after Whisper's English normaliser, which removes bracketed and
parenthesised text, so sound-event captions such as "(engine revving)" and "[BLANK_AUDIO]" do
not count, "you" does). Each condition: the rate, its paired difference from the clean run and
``changed``, the share of transcripts that differ from the clean one at all (raw text, so a
caption swapped for another counts), with 95% bootstrap intervals over clips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.sae.separation import auroc

MEASURES = ("non_empty", "words")


def _nonspeech_paths(speech) -> tuple[list[str], np.ndarray, np.ndarray]:
    labels, classes = speech.encoded("speech")
    sp, ns = labels == classes.index("speech"), labels == classes.index("non-speech")
    return [str(p) for p, keep in zip(speech.paths, ns) if keep], sp, ns


def scores(texts) -> dict:
    """Per clip 0/1 ``non_empty`` and ``words`` (module docstring) and the normalised texts."""
    from jaxasr_interp.whisper.text_metrics import normalize
    norm = [normalize(t, "english").strip() for t in texts]
    return dict(non_empty=np.array([bool(t.strip()) for t in texts], float),
                words=np.array([bool(t) for t in norm], float), norm=norm)


def clean_transcripts(model, speech, max_new_tokens: int) -> tuple[list[str], dict]:
    """The clean greedy transcripts of the non-speech clips and their rates."""
    from jaxasr_interp.whisper.api import transcribe
    paths, _, _ = _nonspeech_paths(speech)
    texts = transcribe(model, paths, max_new_tokens=max_new_tokens)
    scored = scores(texts)
    return texts, {m: interval(bootstrap_ci(scored[m]), len(texts)) for m in MEASURES}


def matched(stat, chosen, candidates, rng, width: int = 10) -> list[int]:
    """For each chosen latent, a random unchosen candidate among the ``width`` nearest in ``stat``."""
    picked: list[int] = []
    for j in chosen:
        pool = [int(c) for c in candidates if c not in set(chosen) | set(picked)]
        near = sorted(pool, key=lambda c: abs(stat[c] - stat[j]))[:width]
        picked.append(int(rng.choice(near)))
    return picked


def condition(runs, clean: dict, names) -> dict:
    """One condition's rates (each clip averaged over the runs, its draws) and differences."""
    scored = [scores(texts) for texts in runs]
    out = {}
    for m in MEASURES:
        per_clip = np.mean([s[m] for s in scored], axis=0)
        out[m] = dict(rate=interval(bootstrap_ci(per_clip), len(per_clip)),
                      minus_clean=interval(bootstrap_ci(per_clip - clean[m]), len(per_clip)))
    changed = np.mean([[a.strip() != b.strip() for a, b in zip(texts, clean["texts"])] for texts in runs], axis=0)
    out["changed"] = interval(bootstrap_ci(changed), len(changed))
    diff = [i for i, t in enumerate(runs[0]) if t.strip() != clean["texts"][i].strip()][:3]
    out["examples"] = [dict(clip=names[i], clean=clean["texts"][i].strip(), edited=runs[0][i].strip())
                       for i in diff]
    return out


def _plan(stats, sp, ns, cfg, rng) -> tuple[dict, dict]:
    """The edits of every condition (lists: one per draw) and what they are made of."""
    n = len(sp)
    sums, fires, rows = (stats[k][:n] for k in ("sums", "fires", "rows"))
    means = sums / np.maximum(rows, 1)[:, None]
    au = auroc(means, sp.astype(int))
    speech_lat = [int(j) for j in np.argsort(-au, kind="stable")[: cfg["top"]]]
    nonspeech_lat = [int(j) for j in np.argsort(au, kind="stable")[: cfg["ablate_top"]]]
    when_on = sums[sp].sum(0) / np.maximum(fires[sp].sum(0), 1)  # mean activation when firing on speech
    mean_ns = means[ns].mean(0)
    ctrl_ab = [matched(mean_ns, nonspeech_lat, np.flatnonzero(fires[ns].sum(0) > 0), rng)
               for _ in range(cfg["controls"])]
    ctrl_st = [matched(when_on, speech_lat, np.flatnonzero(fires[sp].sum(0) > 0), rng)
               for _ in range(cfg["controls"])]
    conds = {"ablate_nonspeech": [dict(ablate=nonspeech_lat)], "ablate_control": [dict(ablate=c) for c in ctrl_ab]}
    for f in cfg["factors"]:
        conds[f"steer_speech_x{f:g}"] = [dict(steer=(speech_lat, f * when_on[speech_lat]))]
        conds[f"steer_control_x{f:g}"] = [dict(steer=(c, f * when_on[c])) for c in ctrl_st]
    r4 = lambda v: [round(float(x), 4) for x in v]
    info = dict(speech_latents=speech_lat, speech_auroc=r4(au[speech_lat]), steer_alpha=r4(when_on[speech_lat]),
                control_steer=ctrl_st, control_alpha=[r4(when_on[c]) for c in ctrl_st],
                nonspeech_latents=nonspeech_lat, nonspeech_auroc=r4(au[nonspeech_lat]),
                nonspeech_mean=r4(mean_ns[nonspeech_lat]), control_ablate=ctrl_ab,
                control_ablate_mean=[r4(mean_ns[c]) for c in ctrl_ab])
    info.update(averages(info))
    return conds, info


def averages(info: dict) -> dict:
    """The mean activation on non-speech of the ablated latents and of each control draw (of the
    rounded per-latent values the results file holds, so the docs can quote them)."""
    return dict(nonspeech_mean_avg=round(float(np.mean(info["nonspeech_mean"])), 4),
                control_ablate_mean_avg=[round(float(np.mean(m)), 4) for m in info["control_ablate_mean"]])


def edited_runs(model, sae, stats, speech, cfg: dict, clean_texts) -> dict:
    """Every condition at ``sae``'s layer (module docstring); ``stats``: :func:`.inspect.clip_stats`
    of the store whose first clips are ``speech``'s; ``cfg``: ``top``, ``ablate_top``,
    ``factors``, ``controls``, ``seed``, ``max_new_tokens``."""
    from jaxasr_interp.sae.steer import edited_transcripts_many
    paths, sp, ns = _nonspeech_paths(speech)
    conds, info = _plan(stats, sp, ns, cfg, np.random.default_rng([cfg["seed"], sae.config.layer]))
    names = [Path(p).name for p in paths]
    clean = dict(texts=clean_texts, **scores(clean_texts))
    flat = [kw for edits in conds.values() for kw in edits]  # every draw of every condition, one pass
    texts = iter(edited_transcripts_many(model, paths, sae, flat, max_new_tokens=cfg["max_new_tokens"]))
    out = dict(layer=sae.config.layer, **info, conditions={})
    for name, edits in conds.items():
        out["conditions"][name] = condition([next(texts) for _ in edits], clean, names)
    return out
