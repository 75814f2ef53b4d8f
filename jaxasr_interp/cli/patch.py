"""``jaxasr-interp patch`` (sweep one component family on your audio) and the experiments
``jaxasr-interp experiment repetition`` and ``jaxasr-interp experiment contextual-bias``.

``patch AUDIO... --site SITE --out DIR``: SITE is a family (``decoder.cross_head``...) or the
site it patches (``decoder.cross_attn.z``...). Each file is transcribed greedily; the family is
swept over ``--alphas`` towards the reference (seeded white noise, or ``--reference FILE``),
teacher-forced on that transcript. Writes ``patch.json`` (per file: transcript, and per layer /
head / alpha the mean change of the clean tokens' log-probability and logit and the fraction
of positions whose top-1 token changed), ``patch.csv`` (the same, one row each),
``patch_alpha.png`` and, for head families, ``patch_heads.png``. ``--decode`` adds edited greedy
transcripts at the largest alpha for decoder families (WER against the clean transcript,
repetition). Every command here takes ``--dtype`` and ``--precision`` (:mod:`.options`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxasr_interp.cli.lens import out_dir
from jaxasr_interp.cli.options import add_model, add_numerics, add_out, add_reference, floats, numerics


def _patch(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.patching.sweeps import MODES, family_of
    from jaxasr_interp.whisper.streaming import check_files
    check_files(args.audio)
    if args.reference is not None and not Path(args.reference).is_file():
        raise FileNotFoundError(f"reference audio not found: {args.reference}")
    family, alphas = family_of(args.site), floats(args.alphas)
    if args.mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}")
    out = out_dir(args.out)
    model = load(args.model, dtype=args.dtype)
    records = [_sweep_record(model, path, family, alphas, args) for path in args.audio]
    (out / "patch.json").write_text(json.dumps(records, indent=1) + "\n")
    _write_csv(out / "patch.csv", records, family)
    _plot(model, records, family, alphas, args.mode, out)
    _print(records, family, alphas)
    print(f"wrote {out / 'patch.json'}, {out / 'patch.csv'} and plots")
    return 0


def _sweep_record(model, path, family, alphas, args) -> dict:
    from jaxasr_interp.patching.on_audio import decode_audio, sweep_audio
    ids, tokens, ref, stats = sweep_audio(model, path, family, alphas, mode=args.mode,
                                          reference=args.reference, width=args.width,
                                          **numerics(args))
    rec = dict(audio=path, transcript=model.tokenizer.decode(ids).strip(), family=family, alphas=list(alphas),
               **{k: v.tolist() for k, v in stats.items()})
    if args.decode and family.startswith("decoder"):
        rec["decoded"] = decode_audio(model, path, family, tokens, ref, max(alphas), mode=args.mode,
                                      **numerics(args))
    return rec


def _write_csv(path, records, family) -> None:
    import csv
    from jaxasr_interp.patching.on_audio import STATISTICS
    from jaxasr_interp.patching.sweeps import is_head_family
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "family", "layer", "head", "alpha", "d_logprob", "d_logit", "top_changed"])
        for rec in records:
            for layer, patch, a in np.ndindex(np.shape(rec["logprob"])):
                w.writerow([rec["audio"], family, layer, patch if is_head_family(family) else "", rec["alphas"][a]]
                           + [f"{rec[k][layer][patch][a]:.5f}" for k in STATISTICS])


def _plot(model, records, family, alphas, mode, out) -> None:
    from jaxasr_interp.patching.on_audio import alpha_curves, pooled
    from jaxasr_interp.patching.sweeps import is_head_family
    from jaxasr_interp.plots.patching import plot_alpha_curves, plot_head_heatmap
    heads = is_head_family(family)
    logprob = pooled([r["logprob"] for r in records])  # [L, P, A]
    plot_alpha_curves(alphas, alpha_curves(logprob, family), path=out / "patch_alpha.png",
                      ylabel="mean change of clean-token log-prob",
                      title=f"{model.source}: {family} ({mode}), {len(records)} file(s)"
                            + ("; strongest head per layer" if heads else ""))
    if heads:
        plot_head_heatmap(logprob[..., -1], path=out / "patch_heads.png", fmt="{:.2f}", label="change of log-prob",
                          title=f"{model.source}: {family} at alpha {alphas[-1]}")


def _print(records, family, alphas) -> None:
    from jaxasr_interp.patching.on_audio import largest_drop
    from jaxasr_interp.patching.sweeps import is_head_family
    for rec in records:
        (layer, head, a), value = largest_drop(rec["logprob"])
        print(f"{rec['audio']}\t{rec['transcript']}\n  largest drop: layer {layer}"
              + (f" head {head}" if is_head_family(family) else "")
              + f" alpha {alphas[a]}: {value:+.3f} log-prob per token")


def register(sub):
    p = sub.add_parser("patch", help="activation-patching sweep of one component family",
                       description="Sweep every layer (and head) of a component family over an alpha grid "
                                   "towards a reference run (white noise by default), teacher-forced on each "
                                   "file's greedy transcript. Families: encoder.block|attn|mlp|head, "
                                   "decoder.block|self_attn|cross_attn|mlp|self_head|cross_head (or their sites).")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    p.add_argument("--site", required=True, help="component family or site, e.g. decoder.cross_attn.z")
    add_reference(p)
    p.add_argument("--alphas", default="0.25,0.5,0.75,1", help="comma-separated alphas")
    p.add_argument("--mode", default="interpolate", help="interpolate (towards the reference) or zero")
    add_model(p)
    p.add_argument("--width", type=int, default=64, help="teacher-forced sequence length (prompt + transcript)")
    p.add_argument("--decode", action="store_true", help="decoder families: edited greedy transcripts too")
    add_out(p)
    add_numerics(p)
    p.set_defaults(run=_patch)


def _repetition(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.experiments import repetition as R
    from jaxasr_interp.whisper.streaming import check_files
    if args.max_items < 1:
        raise ValueError("--max-items must be at least 1")
    check_files(args.audio)
    out = out_dir(args.out)
    result = R.run(load(args.model, dtype=args.dtype), audio=args.audio or None, alphas=floats(args.alphas),
                   max_items=args.max_items, max_new_tokens=args.max_new_tokens, reference=args.reference,
                   seed=args.seed, work_dir=out / "checkpoints", **numerics(args))
    summary = R.write_report(result, out)
    print(json.dumps(summary, indent=1) if args.json else R.format_summary(summary))
    return 0


def _contextual(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.experiments import contextual_bias as C
    from jaxasr_interp.patching.sweeps import family_of
    stimuli = C.items_from_file(args.sentences) if args.sentences else None
    out = out_dir(args.out)
    families = tuple(family_of(f) for f in args.families.split(","))
    result = C.run(load(args.model, dtype=args.dtype), out, stimuli=stimuli, families=families,
                   alphas=floats(args.alphas), head_alphas=floats(args.head_alphas), max_items=args.max_items,
                   reference=args.reference, voice=args.voice, speed=args.speed,
                   attribution=not args.no_attribution, **numerics(args))
    summary = C.write_report(result, out)
    print(json.dumps(summary, indent=1, default=str) if args.json else C.format_summary(summary))
    return 0


def register_experiments(exp_sub):
    from jaxasr_interp.experiments.contextual_bias import DECODER_FAMILIES, ENCODER_FAMILIES
    p = exp_sub.add_parser("repetition", help="repetition hallucinations: patch cross-attention layers and heads",
                           description="Find looping transcripts in a pool of real, noisy, truncated, clipped and "
                                       "very fast synthesized speech, or in your AUDIO files (the first 30 s of "
                                       "each; those that do not loop are reported as 'no loop found'); patch "
                                       "every decoder layer's cross-attention and every head towards white "
                                       "noise; report % of loops resolved.")
    p.add_argument("audio", nargs="*", metavar="AUDIO",
                   help="your audio files, searched for looping transcripts (default: the built-in pool)")
    add_model(p)
    add_out(p)
    p.add_argument("--alphas", default="0.25,0.5,0.75,1", help="comma-separated patch strengths")
    p.add_argument("--max-items", type=int, default=16, help="looping items patched")
    p.add_argument("--max-new-tokens", type=int, default=96, help="greedy decoding length (loops need room)")
    add_reference(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in pool (unused with AUDIO)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_numerics(p)
    p.set_defaults(run=_repetition)
    p = exp_sub.add_parser("contextual-bias", help="contextual bias: patch encoder (and decoder) components",
                           description="Synthesize minimal-pair sentences (or read --sentences FILE: a CSV, or "
                                       "a .tsv, whose header names the columns sentence,spoken,expected and "
                                       "optionally audio, a recording used instead of synthesis), count "
                                       "contextual errors, patch components towards white noise, report % of "
                                       "errors flipped to the spoken word.")
    add_model(p)
    add_out(p)
    p.add_argument("--sentences", default=None, metavar="FILE",
                   help="your sentences: CSV (or .tsv) with the columns sentence,spoken,expected[,audio]; "
                        "spoken = the word said, expected = the word the context predicts; rows without "
                        "audio are synthesized (default: the built-in minimal pairs)")
    p.add_argument("--families", default=",".join(ENCODER_FAMILIES + DECODER_FAMILIES),
                   help="comma-separated component families (or sites) patched")
    p.add_argument("--alphas", default="0.5,1", help="alphas of layer families")
    p.add_argument("--head-alphas", default="1", help="alphas of head families")
    p.add_argument("--max-items", type=int, default=12, help="contextual errors patched")
    add_reference(p)
    p.add_argument("--voice", default="en-us", help="espeak-ng voice of the synthesized sentences")
    p.add_argument("--speed", type=int, default=150, help="espeak-ng speaking rate, words per minute")
    p.add_argument("--no-attribution", action="store_true",
                   help="skip attribution patching and its rank correlation with the sweep")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_numerics(p)
    p.set_defaults(run=_contextual)
