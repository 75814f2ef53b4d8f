"""The README's lens tables and figures, measured on the 5 bundled LibriVox clips.

    python scripts/lens_tables.py [--models tiny.en base] [--out notes/lens_tables.md]
        [--clips N] [--max-new-tokens 96] [--figures docs/figures] [--work runs/lens_tables]

For each model: the encoder lens per layer (pooled WER/CER against the references after
Whisper's English normaliser; plain argmax, with Whisper's suppression, and without ln_post),
repetition per layer, and the mean logit-lens saturation layer (teacher-forced on the model's
own greedy transcripts). Writes one figure of each kind to ``--figures``. ``--clips N``: the
first N clips only (the example clip always among them), for a quick run.

Resumable (:mod:`jaxasr_interp.experiments.stages`): each lens run (all clips at once) is
saved in ``--work/<model>`` as soon as it finishes; rerun the same command after an
interruption and the finished runs are read back (identical tables); other settings in the same
``--work`` are a one-line error.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import jaxasr_interp as jai
from jaxasr_interp.experiments.lens_stages import (pack_encoder_lens, pack_logit_lens, unpack_encoder_lens,
                                                   unpack_logit_lens)
from jaxasr_interp.experiments.stages import Work
from jaxasr_interp.lenses.encoder import encoder_lens, pooled_rates
from jaxasr_interp.lenses.logit import logit_lens
from jaxasr_interp.plots.lens import plot_encoder_lens, plot_logit_lens, plot_saturation_histogram

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
MAX_NEW_TOKENS = 96  # 3x the longest reference (~30 tokens): enough to see a loop, cheap to run
EXAMPLE = "sense_and_sensibility_01_austen_64kb-0890.wav"
RUNS = {"plain": {}, "suppress": {"suppress": True}, "no_ln_post": {"ln_post": False}}


def librivox(n_clips: int | None = None) -> dict[str, str]:
    """The LibriVox clips and their references; ``n_clips``: the first ones, the example among them."""
    refs = {k: v for k, v in jai.sample_transcripts().items() if k != "jfk.wav"}
    if n_clips is None:
        return refs
    keep = {EXAMPLE, *[k for k in refs if k != EXAMPLE][: max(n_clips, 1) - 1]}
    return {k: v for k, v in refs.items() if k in keep}


def encoder_tables(model, name: str, refs: dict[str, str], work: Work, figures: Path,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> tuple[str, dict]:
    paths = [jai.sample_path(k) for k in refs]

    def one(label):
        return pack_encoder_lens(encoder_lens(model, paths, list(refs.values()), max_new_tokens=max_new_tokens,
                                              batch_size=len(paths), **RUNS[label]))

    runs = {label: unpack_encoder_lens(r) for label, r in zip(RUNS, work.map("encoder_lens", one, list(RUNS)))}
    pooled = {label: pooled_rates(r) for label, r in runs.items()}
    lines = [f"| layer | WER | CER | WER, suppressed | WER, no ln_post | empty (plain) | "
             f"loops: max n-gram run >= 3 (suppressed) | transcript of {EXAMPLE[-8:-4]} (suppressed) |",
             "|---|---|---|---|---|---|---|---|"]
    for layer in range(model.dims.n_audio_layer):
        sup = runs["suppress"]
        empty = sum(not x.transcripts[layer].strip() for x in runs["plain"])
        loops = sum(int(x.max_repeat[layer] >= 3) for x in sup)
        example = sup[list(refs).index(EXAMPLE)].transcripts[layer].strip().replace("|", "/")
        example = example if len(example) < 70 else example[:67] + "..."
        lines.append(f"| {layer} | {pooled['plain'][0][layer]:.3f} | {pooled['plain'][1][layer]:.3f} | "
                     f"{pooled['suppress'][0][layer]:.3f} | {pooled['no_ln_post'][0][layer]:.3f} | "
                     f"{empty}/{len(refs)} | {loops}/{len(refs)} | {example or '(empty)'} |")
    i = list(refs).index(EXAMPLE)  # the example first: its transcripts are written beside the curve
    sup = runs["suppress"]
    plot_encoder_lens([sup[i]] + sup[:i] + sup[i + 1:], path=figures / f"encoder_lens_{name}.png",
                      title=f"encoder lens, {name}, suppressed decoding ({len(refs)} LibriVox clips)")
    data = {label: {"wer": p[0].tolist(), "cer": p[1].tolist()} for label, p in pooled.items()}
    return "\n".join(lines), data


def _logit_lens_run(model, paths) -> dict:
    """The logit lens teacher-forced on the model's own greedy transcripts (+ their lengths)."""
    tok = model.tokenizer
    seqs = [tok.prompt() + ids for ids in jai.transcribe_ids(model, paths, batch_size=len(paths))]
    width = max(map(len, seqs))
    mels = jnp.stack([jai.log_mel(jai.load_audio(p), n_mels=model.dims.n_mels) for p in paths])
    tokens = jnp.asarray([s + [tok.eot] * (width - len(s)) for s in seqs], jnp.int32)
    return dict(pack_logit_lens(logit_lens(model, mels, tokens)), lengths=np.asarray([len(s) for s in seqs]))


def saturation(model, name: str, refs: dict[str, str], work: Work, figures: Path) -> tuple[float, np.ndarray]:
    paths = [jai.sample_path(k) for k in refs]
    (run,) = work.map("logit_lens", lambda _: _logit_lens_run(model, paths), ["all clips"])
    lens, lengths = unpack_logit_lens(run), [int(n) for n in run["lengths"]]
    sat = np.concatenate([lens.saturation[i, :n] for i, n in enumerate(lengths)])
    i = list(refs).index(EXAMPLE)
    plot_logit_lens(lens, model.tokenizer, index=i, max_positions=lengths[i], path=figures / f"logit_lens_{name}.png",
                    title=f"logit lens, {name}: {EXAMPLE}")
    return float(sat.mean()), sat


def _arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--out", default="notes/lens_tables.md")
    parser.add_argument("--clips", type=int, default=None, help="the first N clips only (default: all 5)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS, help="encoder-lens decoding length")
    parser.add_argument("--figures", default=str(FIGURES), help="folder of the figures")
    parser.add_argument("--work", default=str(ROOT / "runs" / "lens_tables"),
                        help="checkpoints, one folder per model (resumed on rerun)")
    return parser.parse_args(argv)


def _section(model, name: str, table: str, mean_sat: float, sat, seconds: float) -> str:
    return (f"### {name} ({model.dims.n_audio_layer} encoder / {model.dims.n_text_layer} "
            f"decoder layers)\n\n{table}\n\nMean logit-lens saturation layer: "
            f"**{mean_sat:.2f}** (layers 0..{model.dims.n_text_layer - 1}, "
            f"{sat.size} token positions). ({seconds:.0f} s)\n")


def main(argv=None):
    args = _arguments(argv)
    figures = Path(args.figures)
    figures.mkdir(parents=True, exist_ok=True)
    refs = librivox(args.clips)
    sections, results, sats = [], {}, {}
    for name in args.models:
        start = time.time()
        model = jai.load(name)
        work = Work(Path(args.work) / name.replace("/", "_"), dict(script="lens_tables", model=name, clips=list(refs),
                    max_new_tokens=args.max_new_tokens), what="lens table")
        table, data = encoder_tables(model, name, refs, work, figures, args.max_new_tokens)
        mean_sat, sats[name] = saturation(model, name, refs, work, figures)
        results[name] = {**data, "mean_saturation": mean_sat, "n_positions": int(sats[name].size),
                         "n_text_layer": model.dims.n_text_layer}
        sections.append(_section(model, name, table, mean_sat, sats[name], time.time() - start))
        print(sections[-1], flush=True)
    n_layers = max(results[n]["n_text_layer"] for n in sats)
    plot_saturation_histogram([sats[n] for n in sats], n_layers, labels=list(sats),
                              path=figures / "saturation.png",
                              title=f"saturation layers, {len(refs)} LibriVox clips")
    Path(args.out).write_text("\n".join(sections))
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
