"""``jaxasr-interp logit-lens`` and ``jaxasr-interp encoder-lens``: the lenses from the CLI.

Both work with any model ``load`` accepts (``--model``) and write into ``--out``:

- logit-lens: ``logit_lens.json`` (per file: tokens, final predictions, saturation layers and
  every site's per-layer top-k / final-token probability / rank / KL), ``logit_lens.csv`` (one
  row per file x site x layer x position), ``logit_lens_<stem>.png`` heatmaps and
  ``saturation.png``. The tokens read are the model's own greedy transcript (or ``--text``).
- encoder-lens: ``encoder_lens.json``, ``encoder_lens.csv`` (one row per file x layer) and
  ``encoder_lens.png``; the pooled WER per layer is printed. ``--ref-text`` is a text file with
  one reference per line in AUDIO order, or a JSON object {file name: text}.

Both take ``--dtype`` and ``--precision`` (:mod:`.options`).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from jaxasr_interp.cli.options import add_model, add_numerics, add_out, numerics


def out_dir(path) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _logit_lens(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.lenses.files import (logit_lens_files, logit_lens_record, logit_lens_rows,
                                            saturation_summary, teacher_ids)
    from jaxasr_interp.plots.lens import plot_logit_lens, plot_saturation_histogram
    from jaxasr_interp.whisper.streaming import check_files

    check_files(args.audio)
    if args.text is not None and len(args.audio) != 1:
        raise ValueError("--text needs exactly one AUDIO file")
    out = out_dir(args.out)
    model = load(args.model, dtype=args.dtype)
    ids = teacher_ids(model, args.audio, text=args.text, batch_size=args.batch_size, progress=True,
                      **numerics(args))
    rows, records, saturations = [], [], []
    lenses = logit_lens_files(model, args.audio, ids, batch_size=args.batch_size, k=args.top_k, progress=True,
                              **numerics(args))
    for i, lens in enumerate(lenses):  # the generator runs to its end: its progress bar closes
        path = args.audio[i]
        record = logit_lens_record(lens, model.tokenizer, path)
        records.append(record)
        saturations.append(lens.saturation)
        rows += logit_lens_rows(record)
        plot_logit_lens(lens, model.tokenizer, site=args.site, max_positions=len(lens.tokens),
                        path=out / f"logit_lens_{Path(path).stem}.png",
                        title=f"logit lens ({args.site}): {Path(path).name}")
    positions, mean = saturation_summary(saturations)
    plot_saturation_histogram(positions, model.dims.n_text_layer, path=out / "saturation.png")
    (out / "logit_lens.json").write_text(json.dumps(records, indent=1))
    _write_csv(out / "logit_lens.csv", rows)
    print(f"mean saturation layer {mean:.2f} of {model.dims.n_text_layer} decoder layers "
          f"({len(positions)} positions); wrote {out}")
    return 0


def _write_csv(path: Path, rows: list[dict]):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_references(path, audio) -> list[str]:
    """References for ``audio`` from a text file (one per line) or JSON {file name: text}."""
    text = Path(path).read_text()
    if Path(path).suffix == ".json":
        table = json.loads(text)
        missing = [a for a in audio if Path(a).name not in table]
        if missing:
            raise KeyError(f"--ref-text {path} has no reference for {', '.join(map(str, missing))}")
        return [table[Path(a).name] for a in audio]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != len(audio):
        raise ValueError(f"--ref-text {path} has {len(lines)} non-empty lines for {len(audio)} AUDIO files")
    return lines


def _encoder_lens(args) -> int:
    from jaxasr_interp.whisper.api import load
    from jaxasr_interp.lenses.encoder import encoder_lens, pooled_rates
    from jaxasr_interp.lenses.files import audio_mel, encoder_lens_record, encoder_lens_rows
    from jaxasr_interp.plots.lens import plot_encoder_lens
    from jaxasr_interp.whisper.streaming import check_files

    check_files(args.audio)
    refs = read_references(args.ref_text, args.audio) if args.ref_text else None
    out = out_dir(args.out)
    model = load(args.model, dtype=args.dtype)
    lenses = encoder_lens(model, list(args.audio), refs, ln_post=not args.no_ln_post,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          suppress=args.suppress, progress=True, **numerics(args))
    wer, cer = pooled_rates(lenses)
    mel, seconds = audio_mel(args.audio[0], model.dims.n_mels) if len(args.audio) == 1 else (None, None)
    plot_encoder_lens(lenses, path=out / "encoder_lens.png", mel=mel, seconds=seconds,
                      title=f"encoder lens, {args.model}" + (", no ln_post" if args.no_ln_post else ""))
    records = [encoder_lens_record(x, a) for a, x in zip(args.audio, lenses)]
    summary = {"model": args.model, "pooled_wer": wer.tolist(), "pooled_cer": cer.tolist(),
               "scored_against": "--ref-text" if refs else "the full model's transcript"}
    (out / "encoder_lens.json").write_text(json.dumps({**summary, "utterances": records}, indent=1))
    _write_csv(out / "encoder_lens.csv", encoder_lens_rows(records))
    print("layer\tWER\tCER", file=sys.stdout)
    for layer, (w, c) in enumerate(zip(wer, cer)):
        print(f"{layer}\t{w:.3f}\t{c:.3f}")
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("logit-lens", help="decoder logit lens of audio files (PNG + JSON/CSV)",
                       description="Read every decoder layer's residual stream (resid_mid, "
                                   "resid_mid_cross, resid_post) through ln_final and the tied "
                                   "embedding, teacher-forced on the model's own transcript.")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    add_out(p)
    add_model(p)
    p.add_argument("--text", default=None, help="read this transcript instead of the greedy one (one AUDIO)")
    p.add_argument("--top-k", type=int, default=5, help="top tokens kept per cell")
    p.add_argument("--site", default="resid_post", choices=("resid_mid", "resid_mid_cross", "resid_post"),
                   help="site shown in the heatmaps (all three are in the JSON/CSV)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per compiled batch")
    add_numerics(p)
    p.set_defaults(run=_logit_lens)

    p = sub.add_parser("encoder-lens", help="the paper's encoder lens: a transcript per encoder layer",
                       description="Feed ln_post(encoder layer l) to the unchanged decoder for every "
                                   "layer l, decode greedily, score WER/CER and repetition per layer.")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    add_out(p)
    add_model(p)
    p.add_argument("--ref-text", default=None, metavar="FILE",
                   help="references: one line per AUDIO, or JSON {file name: text}; default: the "
                        "full model's transcript")
    p.add_argument("--no-ln-post", action="store_true", help="skip ln_post (shows why it is needed)")
    p.add_argument("--suppress", action="store_true", help="Whisper's usual token suppression")
    p.add_argument("--max-new-tokens", type=int, default=None, help="decoding length limit")
    p.add_argument("--batch-size", type=int, default=4, help="utterances (x all layers) per decode")
    add_numerics(p)
    p.set_defaults(run=_encoder_lens)
