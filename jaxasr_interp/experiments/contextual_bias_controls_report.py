"""The results file and docs table of :mod:`.contextual_bias_controls`.

:func:`summarize` turns the per-error sweeps into the results dict: every rate as
``{"value", "lo", "hi", "n"}`` (a fraction, its 95% percentile bootstrap interval over items,
:mod:`jaxasr_interp.core.stats`, and n); per cell (family, layer, head, alpha) the flip rate
averaged over the white-noise seeds, each seed's rate, the matched-norm random control's rate
and patch minus random (paired over errors); the split-half folds (best cell chosen on one
half of the word pairs, reported on the other) and their pooled, cross-validated rate.
:func:`docs_table` (= :func:`markdown`) renders the docs table from that dict alone.
"""

from __future__ import annotations

import numpy as np

from jaxasr_interp.core.stats import bootstrap_ci, interval
from jaxasr_interp.patching.sweeps import is_head_family

STACKS = ("any", "encoder", "decoder")


def ci(values, seed: int = 0) -> dict:
    """Mean of per-item ``values`` with its bootstrap interval and n (n = 0: value None)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        return {"value": None, "lo": None, "hi": None, "n": 0}
    return interval(bootstrap_ci(values, seed=seed), len(values))


def flip_matrix(parts: list, families, key: str) -> tuple[list, np.ndarray]:
    """(cell descriptions, [n_errors, n_cells] flips) of the sweeps ``flips <key> <family>``."""
    metas, cols = [], []
    for fam in families:
        arr = np.stack([np.asarray(p[f"flips {key} {fam}"]) for p in parts]).astype(np.float64)  # [n, L, P, A]
        cols.append(arr.reshape(len(parts), -1))
        metas += [dict(family=fam, layer=int(layer), head=int(head) if is_head_family(fam) else None, a=int(a))
                  for layer, head, a in np.ndindex(arr.shape[1:])]
    return metas, np.concatenate(cols, axis=1)


def choose(rates: np.ndarray, metas: list, stack: str) -> int | None:
    """The column of ``stack``'s best cell (first on ties; None: no cell of that stack)."""
    cols = [c for c, m in enumerate(metas) if stack == "any" or m["family"].startswith(stack)]
    return cols[int(np.argmax(rates[cols]))] if cols else None


def split_halves(groups, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Item indices of two halves of the distinct ``groups`` (word pairs), shuffled with
    ``seed``: every group's items fall on one side only (the first half: floor(G / 2) groups)."""
    groups = np.asarray(groups)
    names = np.unique(groups)
    names = names[np.random.default_rng(seed).permutation(len(names))]
    first = np.isin(groups, names[:len(names) // 2])
    return np.flatnonzero(first), np.flatnonzero(~first)


def split_half(mean, rand, metas, groups, seed: int) -> dict:
    """Both folds of the pair split (:func:`split_halves`) and, per
    stack, the pooled out-of-sample rate (each error scored by the cell chosen without it)."""
    a, b = split_halves(groups, seed)
    folds, pooled = [], {s: ([], []) for s in STACKS}
    for sel, ev in ((a, b), (b, a)):
        if len(sel) == 0 or len(ev) == 0:
            continue
        fold = dict(selection_pairs=sorted(set(groups[sel].tolist())),
                    evaluation_pairs=sorted(set(groups[ev].tolist())), n_selection=len(sel), n_evaluation=len(ev), chosen={})
        for stack in STACKS:
            c = choose(mean[sel].mean(0), metas, stack)
            if c is None:
                continue
            fold["chosen"][stack] = dict(metas[c], selection=ci(mean[sel, c]), evaluation=ci(mean[ev, c]),
                                         random=ci(rand[ev, c]), patch_minus_random=ci(mean[ev, c] - rand[ev, c]))
            pooled[stack][0].extend(mean[ev, c])
            pooled[stack][1].extend(rand[ev, c])
        folds.append(fold)
    held_out = {s: dict(patch=ci(p), random=ci(r), patch_minus_random=ci(np.subtract(p, r)))
                for s, (p, r) in pooled.items() if p}
    if "encoder" in held_out and "decoder" in held_out:  # the same errors in the same order: paired
        held_out["encoder_minus_decoder"] = ci(np.subtract(pooled["encoder"][0], pooled["decoder"][0]))
    return dict(folds=folds, held_out=held_out)


def _classes(classes) -> dict:
    kinds = np.asarray(classes)
    return dict(n_sentences=len(kinds), counts={k: int((kinds == k).sum()) for k in ("contextual", "correct", "other")},
                rates={k: ci(kinds == k) for k in ("contextual", "correct", "other")})


def summarize(parts, cfg, families, alphas, classes, errors, ambiguous, *, model, n_sentences,
              transcribed=None) -> dict:
    """The results dict (module docstring); ``transcribed``: the classes of every transcribed
    sentence (all the config's pairs, also those past ``max_pairs``)."""
    seeds = list(cfg["seeds"])
    per_seed = np.stack([flip_matrix(parts, families, f"seed{k}")[1] for k in range(len(seeds))])  # [S, n, C]
    metas, rand = flip_matrix(parts, families, "random")
    for m in metas:
        m["alpha"] = float(alphas[m["family"]][m.pop("a")])
    mean = per_seed.mean(0)
    cells = [dict(m, flipped=ci(mean[:, c]), per_seed=[round(float(v), 6) for v in per_seed[:, :, c].mean(1)],
                  random=ci(rand[:, c]), patch_minus_random=ci(mean[:, c] - rand[:, c]))
             for c, m in enumerate(metas)]
    in_sample = {s: cells[c] for s in STACKS if (c := choose(mean.mean(0), metas, s)) is not None}
    groups = np.asarray([e["pair"] for e in errors])
    return dict(experiment="contextual_bias_controls", model=model, config=cfg, n_sentences=n_sentences,
                n_pairs=n_sentences // 4, n_errors=len(errors), n_ambiguous=ambiguous,
                n_error_pairs=len(set(groups.tolist())),
                **{k: v for k, v in _classes(classes).items() if k != "n_sentences"},
                transcribed=_classes(classes if transcribed is None else transcribed),
                cells=cells, best_in_sample=in_sample,
                split_half=split_half(mean, rand, metas, groups, cfg.get("split_seed", 0)), errors=errors)


def _pct(c: dict) -> str:
    if c["value"] is None:
        return "n/a (n = 0)"
    return f"{100 * c['value']:.1f}% [{100 * c['lo']:.1f}, {100 * c['hi']:.1f}]"


def _cell(c: dict) -> str:
    head = f" head {c['head']}" if c["head"] is not None else ""
    return f"{c['family']} L{c['layer']}{head} α={c['alpha']:g}"


def _best_per_family_alpha(cells: list) -> list:
    best = {}
    for c in cells:
        k = (c["family"], c["alpha"])
        if k not in best or c["flipped"]["value"] > best[k]["flipped"]["value"]:
            best[k] = c
    return list(best.values())


def markdown(r: dict) -> str:
    """The docs tables of one results file."""
    seeds, c = r["config"]["seeds"], r["counts"]
    lines = [f"**{r['model']}**: {r['n_sentences']} sentences ({r['n_pairs']} pairs x 4 templates); contextual "
             f"errors {c['contextual']} = {_pct(r['rates']['contextual'])}, correct {c['correct']}, other "
             f"{c['other']}; **{r['n_errors']} patchable errors** from {r['n_error_pairs']} pairs "
             f"({r['n_ambiguous']} ambiguous). Flip rates: mean over white-noise seeds {seeds}, "
             "[95% bootstrap interval over errors], n = errors."]
    t = r["transcribed"]
    if t["n_sentences"] != r["n_sentences"]:
        lines[-1] += (f" Transcribed (not all swept): {t['n_sentences']} sentences, contextual errors "
                      f"{t['counts']['contextual']} = {_pct(t['rates']['contextual'])}, correct "
                      f"{_pct(t['rates']['correct'])}, other {_pct(t['rates']['other'])}.")
    lines += ["",
             "| cell (best layer per family and alpha, in-sample) | noise patch: flipped | per seed | "
             "random, matched norm | patch − random |", "|---|---|---|---|---|"]
    for x in _best_per_family_alpha(r["cells"]):
        lines.append(f"| {_cell(x)} | {_pct(x['flipped'])} | {' / '.join(f'{100 * v:.0f}' for v in x['per_seed'])} "
                     f"| {_pct(x['random'])} | {_pct(x['patch_minus_random'])} |")
    lines += ["", "| split half: chosen on → reported on | stack | chosen cell | selection half | "
              "evaluation half | random, same cell | patch − random |", "|---|---|---|---|---|---|---|"]
    for k, f in enumerate(r["split_half"]["folds"]):
        side = f"half {'AB'[k]} ({len(f['selection_pairs'])} pairs, n={f['n_selection']}) → half {'BA'[k]} " \
               f"({len(f['evaluation_pairs'])} pairs, n={f['n_evaluation']})"
        for stack, x in f["chosen"].items():
            lines.append(f"| {side} | {stack} | {_cell(x)} | {_pct(x['selection'])} | {_pct(x['evaluation'])} | "
                         f"{_pct(x['random'])} | {_pct(x['patch_minus_random'])} |")
    lines += ["", "| held out, both folds pooled | noise patch | random, same cells | patch − random |",
              "|---|---|---|---|"]
    for stack, x in r["split_half"]["held_out"].items():
        if stack == "encoder_minus_decoder":
            lines.append(f"| encoder − decoder (paired) | {_pct(x)} | | |")
            continue
        lines.append(f"| {stack} | {_pct(x['patch'])} | {_pct(x['random'])} | {_pct(x['patch_minus_random'])} |")
    return "\n".join(lines)


docs_table = markdown
