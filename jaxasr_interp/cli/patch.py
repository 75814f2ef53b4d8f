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
repetition).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from jaxasr_interp.cli.lens import check_audio, out_dir


def _floats(text: str) -> tuple:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {text!r}") from None
    return values


def _sweep_file(model, audio_path, family, alphas, mode, reference, width):
    import jax.numpy as jnp

    from jaxasr_interp.whisper.api import transcribe_ids
    from jaxasr_interp.whisper.audio import load_audio, log_mel
    from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep
    from jaxasr_interp.patching.reference import reference_activations
    from jaxasr_interp.whisper.tokenizer import teacher_tokens
    tok = model.tokenizer
    ids = transcribe_ids(model, [audio_path], batch_size=1, max_new_tokens=width - len(tok.prompt()) - 1)[0]
    n_real = len(tok.prompt()) + len(ids) + 1
    tokens = jnp.asarray(teacher_tokens(tok.prompt(), ids, tok.eot, width), jnp.int32)
    ref = None if mode == "zero" else reference_activations(model, tokens, [FAMILIES[family]], reference)[FAMILIES[family]]
    mel = log_mel(load_audio(audio_path), n_mels=model.dims.n_mels)
    patched, clean = component_sweep(model.params, mel, tokens, ref, jnp.asarray(alphas), dims=model.dims,
                                     family=family, mode=mode)
    valid = np.arange(width - 1) >= len(tok.prompt()) - 1  # positions that predict the transcript
    valid &= np.arange(width - 1) < n_real - 1
    stats = {k: (np.asarray(patched[k]) - np.asarray(clean[k]))[..., valid].mean(-1) for k in ("logprob", "logit")}
    stats["top_changed"] = (np.asarray(patched["top"]) != np.asarray(clean["top"]))[..., valid].mean(-1)
    return ids, tokens, ref, stats


def _decode_rows(model, audio_path, family, tokens, ref, alpha, mode):
    import jax.numpy as jnp

    from jaxasr_interp.whisper.api import encode_batch
    from jaxasr_interp.whisper.audio import load_audio, log_mel
    from jaxasr_interp.patching.sweeps import is_head_family
    from jaxasr_interp.patching.decoding import behaviour, family_decode_sweep, ids_to_text
    dims, tok = model.dims, model.tokenizer
    feats = encode_batch(model.params, log_mel(load_audio(audio_path), n_mels=dims.n_mels)[None], dims=dims)[0]
    ids, index = family_decode_sweep(model.params, feats, jnp.asarray(tok.prompt(), jnp.int32), tok.eot, ref,
                                     family=family, alphas=[alpha], dims=dims, mode=mode,
                                     max_new_tokens=tokens.shape[0] - len(tok.prompt()) - 1)
    clean = tok.decode(list(np.asarray(tokens[len(tok.prompt()):])))
    heads = is_head_family(family)
    return [dict(layer=int(layer), head=int(head) if heads else None, alpha=alpha,
                 **behaviour(ids_to_text(tok, row), reference=clean)) for (layer, head, _), row in zip(index, ids)]


def _patch(args) -> int:
    import csv

    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.patching.sweeps import MODES, family_of, is_head_family
    from jaxasr_interp.plots.patching import plot_alpha_curves, plot_head_heatmap
    check_audio(args.audio)
    if args.reference is not None and not Path(args.reference).is_file():
        raise FileNotFoundError(f"reference audio not found: {args.reference}")
    family, alphas = family_of(args.site), _floats(args.alphas)
    if args.mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}")
    out = out_dir(args.out)
    model = load(args.model)
    records, rows = [], []
    for path in args.audio:
        ids, tokens, ref, stats = _sweep_file(model, path, family, alphas, args.mode, args.reference, args.width)
        rec = dict(audio=path, transcript=model.tokenizer.decode(ids).strip(), family=family, alphas=list(alphas),
                   **{k: v.tolist() for k, v in stats.items()})
        if args.decode and family.startswith("decoder"):
            rec["decoded"] = _decode_rows(model, path, family, tokens, ref, max(alphas), args.mode)
        records.append(rec)
        for layer, patch, a in np.ndindex(stats["logprob"].shape):
            rows.append([path, family, layer, patch if is_head_family(family) else "", alphas[a]]
                        + [f"{stats[k][layer, patch, a]:.5f}" for k in ("logprob", "logit", "top_changed")])
    (out / "patch.json").write_text(json.dumps(records, indent=1) + "\n")
    with open(out / "patch.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audio", "family", "layer", "head", "alpha", "d_logprob", "d_logit", "top_changed"])
        w.writerows(rows)
    pooled = np.mean([r["logprob"] for r in records], axis=0)  # [L, P, A]
    curves = {f"layer {layer}": pooled[layer].min(0) if is_head_family(family) else pooled[layer, 0]
              for layer in range(pooled.shape[0])}
    plot_alpha_curves(alphas, curves, path=out / "patch_alpha.png", ylabel="mean change of clean-token log-prob",
                      title=f"{model.source}: {family} ({args.mode}), {len(records)} file(s)"
                            + ("; strongest head per layer" if is_head_family(family) else ""))
    if is_head_family(family):
        plot_head_heatmap(pooled[..., -1], path=out / "patch_heads.png", fmt="{:.2f}", label="change of log-prob",
                          title=f"{model.source}: {family} at alpha {alphas[-1]}")
    for rec in records:
        worst = np.unravel_index(int(np.argmin(rec["logprob"])), np.shape(rec["logprob"]))
        print(f"{rec['audio']}\t{rec['transcript']}\n  largest drop: layer {worst[0]}"
              + (f" head {worst[1]}" if is_head_family(family) else "")
              + f" alpha {alphas[worst[2]]}: {np.min(rec['logprob']):+.3f} log-prob per token")
    print(f"wrote {out / 'patch.json'}, {out / 'patch.csv'} and plots")
    return 0


def register(sub):
    p = sub.add_parser("patch", help="activation-patching sweep of one component family",
                       description="Sweep every layer (and head) of a component family over an alpha grid "
                                   "towards a reference run (white noise by default), teacher-forced on each "
                                   "file's greedy transcript. Families: encoder.block|attn|mlp|head, "
                                   "decoder.block|self_attn|cross_attn|mlp|self_head|cross_head (or their sites).")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    p.add_argument("--site", required=True, help="component family or site, e.g. decoder.cross_attn.z")
    p.add_argument("--reference", default=None, help="reference audio (default: seeded white noise)")
    p.add_argument("--alphas", default="0.25,0.5,0.75,1", help="comma-separated alphas")
    p.add_argument("--mode", default="interpolate", help="interpolate (towards the reference) or zero")
    p.add_argument("--model", default="tiny.en", help="model name or path")
    p.add_argument("--width", type=int, default=64, help="teacher-forced sequence length (prompt + transcript)")
    p.add_argument("--decode", action="store_true", help="decoder families: edited greedy transcripts too")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=_patch)


def _repetition(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.experiments import repetition as R
    if args.max_items < 1:
        raise ValueError("--max-items must be at least 1")
    out = out_dir(args.out)
    result = R.run(load(args.model), alphas=_floats(args.alphas), max_items=args.max_items,
                   max_new_tokens=args.max_new_tokens, reference=args.reference, seed=args.seed)
    summary = R.write_report(result, out)
    print(json.dumps(summary, indent=1) if args.json else R.format_summary(summary))
    return 0


def _contextual(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.data.minimal_pairs import read_user_list
    from jaxasr_interp.experiments import contextual_bias as C
    from jaxasr_interp.patching.sweeps import family_of
    out = out_dir(args.out)
    stimuli = read_user_list(args.sentences) if args.sentences else None
    families = tuple(family_of(f) for f in args.families.split(","))
    result = C.run(load(args.model), out, stimuli=stimuli, families=families, alphas=_floats(args.alphas),
                   head_alphas=_floats(args.head_alphas), max_items=args.max_items, reference=args.reference,
                   voice=args.voice, speed=args.speed, attribution=not args.no_attribution)
    summary = C.write_report(result, out)
    print(json.dumps(summary, indent=1, default=str) if args.json else C.format_summary(summary))
    return 0


def register_experiments(exp_sub):
    from jaxasr_interp.experiments.contextual_bias import DECODER_FAMILIES, ENCODER_FAMILIES
    p = exp_sub.add_parser("repetition", help="repetition hallucinations: patch cross-attention layers and heads",
                           description="Find looping transcripts in a pool of real, noisy, truncated, clipped and "
                                       "very fast synthesized speech; patch every decoder layer's cross-attention "
                                       "and every head towards white noise; report % of loops resolved.")
    p.add_argument("--model", default="tiny.en", help="model name or path")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--alphas", default="0.25,0.5,0.75,1", help="comma-separated patch strengths")
    p.add_argument("--max-items", type=int, default=16, help="looping items patched")
    p.add_argument("--max-new-tokens", type=int, default=96, help="greedy decoding length (loops need room)")
    p.add_argument("--reference", default=None, help="reference audio (default: seeded white noise)")
    p.add_argument("--seed", type=int, default=0, help="pool seed")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_repetition)
    p = exp_sub.add_parser("contextual-bias", help="contextual bias: patch encoder (and decoder) components",
                           description="Synthesize minimal-pair sentences (or --sentences CSV with columns "
                                       "sentence,spoken,expected), count contextual errors, patch components "
                                       "towards white noise, report % of errors flipped to the spoken word.")
    p.add_argument("--model", default="tiny.en", help="model name or path")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--sentences", default=None, help="CSV with columns sentence,spoken,expected")
    p.add_argument("--families", default=",".join(ENCODER_FAMILIES + DECODER_FAMILIES),
                   help="comma-separated component families (or sites) patched")
    p.add_argument("--alphas", default="0.5,1", help="alphas of layer families")
    p.add_argument("--head-alphas", default="1", help="alphas of head families")
    p.add_argument("--max-items", type=int, default=12, help="contextual errors patched")
    p.add_argument("--reference", default=None, help="reference audio (default: seeded white noise)")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice of the synthesized sentences")
    p.add_argument("--speed", type=int, default=150, help="espeak-ng speaking rate, words per minute")
    p.add_argument("--no-attribution", action="store_true",
                   help="skip attribution patching and its rank correlation with the sweep")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_contextual)
