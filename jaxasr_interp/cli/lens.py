"""``jaxasr-interp logit-lens`` and ``jaxasr-interp encoder-lens``: the lenses from the CLI.

Both work with any model ``load`` accepts (``--model``) and write into ``--out``:

- logit-lens: ``logit_lens.json`` (per file: tokens, final predictions, saturation layers and
  every site's per-layer top-k / final-token probability / rank / KL), ``logit_lens.csv`` (one
  row per file x site x layer x position), ``logit_lens_<stem>.png`` heatmaps and
  ``saturation.png``. The tokens read are the model's own greedy transcript (or ``--text``).
- encoder-lens: ``encoder_lens.json``, ``encoder_lens.csv`` (one row per file x layer) and
  ``encoder_lens.png``; the pooled WER per layer is printed. ``--ref-text`` is a text file with
  one reference per line in AUDIO order, or a JSON object {file name: text}.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np


def check_audio(paths):
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"audio file not found: {path}")


def out_dir(path) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _logit_lens(args) -> int:
    import jax.numpy as jnp
    from tqdm import tqdm
    from jaxasr_interp.whisper.api import load, transcribe_ids
    from jaxasr_interp.whisper.audio import load_audio, log_mel
    from jaxasr_interp.lenses.logit import logit_lens
    from jaxasr_interp.plots.lens import plot_logit_lens, plot_saturation_histogram
    from jaxasr_interp.whisper.tokenizer import teacher_tokens

    check_audio(args.audio)
    if args.text is not None and len(args.audio) != 1:
        raise ValueError("--text needs exactly one AUDIO file")
    out = out_dir(args.out)
    model = load(args.model)
    tok = model.tokenizer
    ids = ([tok.encode(" " + args.text.strip())] if args.text is not None else
           transcribe_ids(model, args.audio, batch_size=args.batch_size, progress=True))
    prompt = tok.prompt()
    seqs = [prompt + i for i in ids]
    width = max(map(len, seqs))  # one length for every batch: one compiled program
    rows, records, saturations = [], [], []
    for start in tqdm(range(0, len(seqs), args.batch_size), desc="logit lens", unit="batch"):
        chunk = list(range(start, min(start + args.batch_size, len(seqs))))
        full = chunk + [chunk[-1]] * (min(args.batch_size, len(seqs)) - len(chunk))
        mels = jnp.stack([log_mel(load_audio(args.audio[i]), n_mels=model.dims.n_mels) for i in full])
        tokens = jnp.asarray([teacher_tokens(prompt, ids[i], tok.eot, width) for i in full], jnp.int32)
        lens = logit_lens(model, mels, tokens, k=args.top_k)
        for j, i in enumerate(chunk):
            n = len(seqs[i])
            record = _lens_record(lens, j, n, tok, args.audio[i])
            records.append(record)
            saturations.append(lens.saturation[j, :n])
            rows += _lens_rows(record)
            plot_logit_lens(lens, tok, index=j, site=args.site, max_positions=n,
                            path=out / f"logit_lens_{Path(args.audio[i]).stem}.png",
                            title=f"logit lens ({args.site}): {Path(args.audio[i]).name}")
    plot_saturation_histogram(np.concatenate(saturations), model.dims.n_text_layer,
                              path=out / "saturation.png")
    (out / "logit_lens.json").write_text(json.dumps(records, indent=1))
    _write_csv(out / "logit_lens.csv", rows)
    mean = float(np.mean(np.concatenate(saturations)))
    print(f"mean saturation layer {mean:.2f} of {model.dims.n_text_layer} decoder layers "
          f"({sum(map(len, saturations))} positions); wrote {out}")
    return 0


def _lens_record(lens, j: int, n: int, tok, audio) -> dict:
    piece = lambda i: tok.decode([int(i)]) or tok.tokenizer.id_to_token(int(i)) or f"<{int(i)}>"
    sites = {}
    for site in lens.sites:
        f = {k: v[j][:, :n] for k, v in lens.site(site).items()}
        sites[site] = {"top_tokens": [[[piece(i) for i in cell] for cell in layer] for layer in f["top_ids"]],
                       **{k: np.round(v, 6).tolist() for k, v in f.items()}}
    return {"audio": str(audio), "tokens": lens.tokens[j, :n].tolist(),
            "token_text": [piece(i) for i in lens.tokens[j, :n]],
            "final_ids": lens.final_ids[j, :n].tolist(),
            "final_text": [piece(i) for i in lens.final_ids[j, :n]],
            "saturation": lens.saturation[j, :n].tolist(), "sites": sites}


def _lens_rows(record) -> list[dict]:
    rows = []
    for site, f in record["sites"].items():
        for layer, top in enumerate(f["top_tokens"]):
            for t, cell in enumerate(top):
                rows.append({"audio": record["audio"], "site": site, "layer": layer, "position": t,
                             "input": record["token_text"][t], "final": record["final_text"][t],
                             "top1": cell[0], "top1_prob": f["top_probs"][layer][t][0],
                             "final_prob": f["final_prob"][layer][t],
                             "final_rank": f["final_rank"][layer][t], "kl": f["kl"][layer][t],
                             "saturation": record["saturation"][t]})
    return rows


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
    from jaxasr_interp.whisper.audio import SAMPLE_RATE, load_audio, log_mel
    from jaxasr_interp.lenses.encoder import encoder_lens, pooled_rates
    from jaxasr_interp.plots.lens import plot_encoder_lens

    check_audio(args.audio)
    refs = read_references(args.ref_text, args.audio) if args.ref_text else None
    out = out_dir(args.out)
    model = load(args.model)
    lenses = encoder_lens(model, list(args.audio), refs, ln_post=not args.no_ln_post,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          suppress=args.suppress, progress=True)
    wer, cer = pooled_rates(lenses)
    mel, seconds = None, None
    if len(args.audio) == 1:
        audio = load_audio(args.audio[0])
        mel, seconds = log_mel(audio, n_mels=model.dims.n_mels), len(audio) / SAMPLE_RATE
    plot_encoder_lens(lenses, path=out / "encoder_lens.png", mel=mel, seconds=seconds,
                      title=f"encoder lens, {args.model}" + (", no ln_post" if args.no_ln_post else ""))
    fields = ("wer", "cer", "max_repeat", "compression_ratio", "hit_limit")
    records = [{"audio": str(a), "reference": x.reference, "final": x.final, "ln_post": x.ln_post,
                "transcripts": x.transcripts, **{f: getattr(x, f).tolist() for f in fields}}
               for a, x in zip(args.audio, lenses)]
    summary = {"model": args.model, "pooled_wer": wer.tolist(), "pooled_cer": cer.tolist(),
               "scored_against": "--ref-text" if refs else "the full model's transcript"}
    (out / "encoder_lens.json").write_text(json.dumps({**summary, "utterances": records}, indent=1))
    _write_csv(out / "encoder_lens.csv", [
        {"audio": r["audio"], "layer": layer, **{f: r[f][layer] for f in fields},
         "transcript": r["transcripts"][layer]} for r in records for layer in range(len(wer))])
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
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default="tiny.en", help="model name or path")
    p.add_argument("--text", default=None, help="read this transcript instead of the greedy one (one AUDIO)")
    p.add_argument("--top-k", type=int, default=5, help="top tokens kept per cell")
    p.add_argument("--site", default="resid_post", choices=("resid_mid", "resid_mid_cross", "resid_post"),
                   help="site shown in the heatmaps (all three are in the JSON/CSV)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per compiled batch")
    p.set_defaults(run=_logit_lens)

    p = sub.add_parser("encoder-lens", help="the paper's encoder lens: a transcript per encoder layer",
                       description="Feed ln_post(encoder layer l) to the unchanged decoder for every "
                                   "layer l, decode greedily, score WER/CER and repetition per layer.")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--model", default="tiny.en", help="model name or path")
    p.add_argument("--ref-text", default=None, metavar="FILE",
                   help="references: one line per AUDIO, or JSON {file name: text}; default: the "
                        "full model's transcript")
    p.add_argument("--no-ln-post", action="store_true", help="skip ln_post (shows why it is needed)")
    p.add_argument("--suppress", action="store_true", help="Whisper's usual token suppression")
    p.add_argument("--max-new-tokens", type=int, default=None, help="decoding length limit")
    p.add_argument("--batch-size", type=int, default=4, help="utterances (x all layers) per decode")
    p.set_defaults(run=_encoder_lens)
