"""Statistics and the docs table of :mod:`.lenses` (``results/lenses_<model>.json``).

Teacher-forced sequence ``prompt + transcript + [eot]``: position ``t`` predicts token ``t+1``,
and :func:`position_kinds` names what it predicts: ``"prompt"`` (the rest of the prompt, e.g.
``<|notimestamps|>``), ``"eot"`` (end-of-text), ``"text"`` (a text token) or ``"special"``
(any other id >= eot); the last position predicts nothing (``""``). Text-token statistics use
``"text"`` positions only; prompt and eot positions are reported apart. The tuned lens is
2-fold cross-fitted: the split's two halves each train a translator that scores the other, so
``tuned_lens`` covers every clip (``n_heldout_clips``), each one held out from its translator.

Intervals (:mod:`..core.stats`): 95% percentile bootstrap over **clips**. Pooled rates (WER,
CER, mean saturation layer, the share of positions saturating at each layer, mean KL) resample
clips with their positions (positions clustered by clip), so the interval reflects between-clip
variation; the tuned-lens gain resamples the held-out clips with both lenses paired.

Schema (every interval ``{"value", "lo", "hi", "n"}``, ``n`` = clips resampled):
``model``, ``dims``, ``config``, ``clips`` (name, source, text, heldout, transcript, counts of
positions by kind), ``encoder_lens[run]`` (``wer``/``cer``: interval per encoder layer;
``empty``: clips with an empty transcript per layer), ``saturation`` (``n_layers``;
``text``/``prompt``/``eot``: ``n_positions``, ``mean``; ``text.distribution``: interval per
saturation layer 0..L, L = never), ``tuned_lens`` (clip and position counts, ``loss``,
``saturation_plain``/``saturation_tuned``/``gain``, ``kl_plain``/``kl_tuned``/``kl_gain``;
``folds``, ``loss_first``/``loss_last``: one per fold); ``clips[].heldout``: in the split's
held-out half (scored by fold 0's translator).
"""

from __future__ import annotations

import re

import numpy as np

from jaxasr_interp.core.stats import interval, paired_ratio_diff_ci, ratio_ci

KINDS = ("text", "prompt", "eot")


def position_kinds(seq, n_prompt: int, eot: int) -> np.ndarray:
    """What each position of ``seq`` predicts (module docstring); ``[len(seq)]`` strings."""
    out = []
    for t in range(len(seq)):
        target = seq[t + 1] if t + 1 < len(seq) else None
        out.append("" if target is None else "prompt" if t + 1 < n_prompt else "eot" if target == eot
                   else "text" if target < eot else "special")
    return np.asarray(out, dtype="<U7")


def _boot(cfg) -> dict:
    return dict(n_boot=cfg["bootstrap"]["n_boot"], seed=cfg["bootstrap"]["seed"])


def _pooled(num, den, cfg) -> dict:
    return interval(ratio_ci(np.asarray(num, float), np.asarray(den, float), **_boot(cfg)), len(num))


def saturation_stats(sats, kinds, n_layers: int, cfg) -> dict:
    """Per kind: n_positions and the mean saturation layer; for text, the distribution."""
    out = {"n_layers": n_layers}
    for kind in KINDS:
        masks = [k == kind for k in kinds]
        count = [int(m.sum()) for m in masks]
        entry = {"n_positions": int(sum(count))}
        if sum(count):
            entry["mean"] = _pooled([s[m].sum() for s, m in zip(sats, masks)], count, cfg)
            entry["histogram"] = np.bincount(np.concatenate([s[m] for s, m in zip(sats, masks)]),
                                             minlength=n_layers + 1).tolist()
        out[kind] = entry
    text = [k == "text" for k in kinds]
    out["text"]["distribution"] = [
        _pooled([(s[m] == layer).sum() for s, m in zip(sats, text)], [m.sum() for m in text], cfg)
        for layer in range(n_layers + 1)]
    return out


def encoder_stats(runs: dict, cfg) -> dict:
    out = {}
    for label, lenses in runs.items():
        n_layers = len(lenses[0].wer)
        out[label] = {
            "wer": [_pooled([x.word_errors[l] for x in lenses], [x.ref_words[l] for x in lenses], cfg)
                    for l in range(n_layers)],
            "cer": [_pooled([x.char_errors[l] for x in lenses], [x.ref_chars[l] for x in lenses], cfg)
                    for l in range(n_layers)],
            "empty": [int(sum(not x.transcripts[l].strip() for x in lenses)) for l in range(n_layers)]}
    return out


def tuned_stats(plain, tuned, kinds, losses, cfg) -> dict:
    """Tuned vs plain on the clips scored (``plain``, ``tuned``, ``kinds``: theirs only; each
    clip's tuned row from a translator trained without it); ``losses``: one curve per fold."""
    masks = [k == "text" for k in kinds]
    count = [int(m.sum()) for m in masks]
    sums = {name: [r["saturation"][m].sum() for r, m in zip(rows, masks)] for name, rows in
            (("plain", plain), ("tuned", tuned))}
    n_layers = plain[0]["kl"].shape[0]
    kl = {name: [[r["kl"][l][m].sum() for r, m in zip(rows, masks)] for l in range(n_layers)]
          for name, rows in (("plain", plain), ("tuned", tuned))}
    boot, n = _boot(cfg), len(count)
    return {
        "n_heldout_clips": n, "n_text_positions": int(sum(count)),
        "folds": len(losses), "steps": cfg["tuned_lens"]["steps"],
        "loss_first": [round(float(loss[0]), 6) for loss in losses],
        "loss_last": [round(float(loss[-1]), 6) for loss in losses],
        "saturation_plain": _pooled(sums["plain"], count, cfg), "saturation_tuned": _pooled(sums["tuned"], count, cfg),
        "gain": interval(paired_ratio_diff_ci(sums["plain"], sums["tuned"], count, **boot), n),
        "kl_plain": [_pooled(kl["plain"][l], count, cfg) for l in range(n_layers)],
        "kl_tuned": [_pooled(kl["tuned"][l], count, cfg) for l in range(n_layers)],
        "kl_gain": [interval(paired_ratio_diff_ci(kl["plain"][l], kl["tuned"][l], count, **boot), n)
                    for l in range(n_layers)]}


def results(model, cfg, clips, held, seqs, kinds, plain, enc, tuned, losses) -> dict:
    """The results file's dict (module docstring); ``tuned``: a row per clip (cross-fitted)."""
    import dataclasses
    tok = model.tokenizer
    rows = [dict(name=c["name"], source=c["source"], text=c["text"], heldout=bool(h),
                 transcript=tok.decode([t for t in s if t < tok.eot]),
                 **{f"n_{k}": int((kd == k).sum()) for k in KINDS})
            for c, h, s, kd in zip(clips, held, seqs, kinds)]
    return {"model": model.source, "dims": dataclasses.asdict(model.dims), "config": cfg, "n_clips": len(clips),
            "n_train_clips": int((~held).sum()), "clips": rows,
            "encoder_lens": encoder_stats(enc, cfg),
            "saturation": saturation_stats([p["saturation"] for p in plain], kinds, model.dims.n_text_layer, cfg),
            "tuned_lens": tuned_stats(plain, tuned, kinds, losses, cfg)}


def _ci(x: dict, fmt: str = ".3f") -> str:
    return f"{x['value']:{fmt}} [{x['lo']:{fmt}}, {x['hi']:{fmt}}]"


def _pct(x: dict) -> str:
    return f"{100 * x['value']:.0f}% [{100 * x['lo']:.0f}, {100 * x['hi']:.0f}]"


def docs_table(res: dict) -> str:
    """Markdown tables of one results file (for docs/lenses.md, between its table markers)."""
    sat, tl, enc = res["saturation"], res["tuned_lens"], res["encoder_lens"]
    runs = list(enc)
    n_layers = sat["n_layers"]
    lines = [f"{res['model']}: {res['n_clips']} clips (tuned lens: halves of {res['n_train_clips']} and "
             f"{res['n_clips'] - res['n_train_clips']}, cross-fitted), {sat['text']['n_positions']} text-token "
             f"positions; 95% bootstrap intervals over clips."
             + (f" Note: {res['config']['note']}." if res["config"].get("note") else ""), "",
             "| encoder layer | " + " | ".join(f"WER {r} | CER {r} | empty {r}" for r in runs) + " |",
             "|---" * (1 + 3 * len(runs)) + "|"]
    for l in range(len(enc[runs[0]]["wer"])):
        cells = [f"{_ci(enc[r]['wer'][l])} | {_ci(enc[r]['cer'][l])} | {enc[r]['empty'][l]}/{res['n_clips']}"
                 for r in runs]
        lines.append(f"| {l} | " + " | ".join(cells) + " |")
    lines += ["", "| predicting | positions | mean saturation layer |", "|---|---|---|"]
    for kind in KINDS:
        e = sat[kind]
        lines.append(f"| {kind} | {e['n_positions']} | {_ci(e['mean'], '.2f') if 'mean' in e else '-'} |")
    lines += ["", "| saturation layer (text tokens) | " + " | ".join(
        str(l) if l < n_layers else "never" for l in range(n_layers + 1)) + " |",
              "|---" * (n_layers + 2) + "|",
              "| share of positions | " + " | ".join(_pct(d) for d in sat["text"]["distribution"]) + " |", "",
              f"Tuned lens (decoder translator, {tl['steps']} steps, {tl['folds']}-fold cross-fitted: each clip "
              f"scored by the translator trained on the other half; training KL "
              + " and ".join(f"{a:.3f} -> {b:.3f}" for a, b in zip(tl["loss_first"], tl["loss_last"]))
              + f") on {tl['n_heldout_clips']} held-out clips, {tl['n_text_positions']} text "
              f"positions: mean saturation layer plain {_ci(tl['saturation_plain'], '.2f')}, tuned "
              f"{_ci(tl['saturation_tuned'], '.2f')}, gain (plain - tuned) **{_ci(tl['gain'], '.2f')} layers**.", "",
              "| decoder layer | KL plain (nats) | KL tuned | KL plain - tuned |", "|---|---|---|---|"]
    for l in range(len(tl["kl_plain"])):
        lines.append(f"| {l} | {_ci(tl['kl_plain'][l], '.2f')} | {_ci(tl['kl_tuned'][l], '.2f')} | "
                     f"{_ci(tl['kl_gain'][l], '.2f')} |")
    return "\n".join(lines) + "\n"


def fill_marker(text: str, model_name: str, table: str) -> str:
    """``text`` with the body of ``<!-- table:lenses_<model> [source] -->`` ... ``<!-- /table -->``
    replaced by ``table`` (the layout of ``scripts/docs_tables.py``); a missing marker is an error."""
    pattern = re.compile(rf"(<!-- table:lenses_{re.escape(model_name)}(?: \S+)? -->\n).*?(<!-- /table -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no <!-- table:lenses_{model_name} ... --> ... <!-- /table --> block")
    return pattern.sub(lambda m: m.group(1) + table + m.group(2), text, count=1)


def saturation_figure(all_results: list[dict], path) -> None:
    """Histogram of text-token saturation layers, one series per results file (from the JSON)."""
    from jaxasr_interp.plots.lens import plot_saturation_histogram
    sats = [np.repeat(np.arange(len(r["saturation"]["text"]["histogram"])), r["saturation"]["text"]["histogram"])
            for r in all_results]
    n_layers = max(r["saturation"]["n_layers"] for r in all_results)
    plot_saturation_histogram(sats, n_layers, labels=[r["model"] for r in all_results], path=path,
                              title="saturation layers of text-token positions (results/lenses_*.json)")
