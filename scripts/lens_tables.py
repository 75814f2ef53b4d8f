"""The README's lens tables and figures, measured on the 5 bundled LibriVox clips.

    python scripts/lens_tables.py [--models tiny.en base] [--out notes/lens_tables.md]

For each model: the encoder lens per layer (pooled WER/CER against the references after
Whisper's English normaliser; plain argmax, with Whisper's suppression, and without ln_post),
repetition per layer, and the mean logit-lens saturation layer (teacher-forced on the model's
own greedy transcripts). Writes one figure of each kind to ``docs/figures/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import jaxasr_interp as jai
from jaxasr_interp.lenses.encoder import encoder_lens, pooled_rates
from jaxasr_interp.lenses.logit import logit_lens
from jaxasr_interp.plots.lens import plot_encoder_lens, plot_logit_lens, plot_saturation_histogram

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
MAX_NEW_TOKENS = 96  # 3x the longest reference (~30 tokens): enough to see a loop, cheap to run
EXAMPLE = "sense_and_sensibility_01_austen_64kb-0890.wav"


def librivox() -> dict[str, str]:
    return {k: v for k, v in jai.sample_transcripts().items() if k != "jfk.wav"}


def encoder_tables(model, name: str, refs: dict[str, str]) -> tuple[str, dict]:
    paths = [jai.sample_path(k) for k in refs]
    runs = {label: encoder_lens(model, paths, list(refs.values()), max_new_tokens=MAX_NEW_TOKENS,
                                batch_size=len(paths), **kw)
            for label, kw in (("plain", {}), ("suppress", {"suppress": True}),
                              ("no_ln_post", {"ln_post": False}))}
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
    plot_encoder_lens([sup[i]] + sup[:i] + sup[i + 1:], path=FIGURES / f"encoder_lens_{name}.png",
                      title=f"encoder lens, {name}, suppressed decoding (5 LibriVox clips)")
    data = {label: {"wer": p[0].tolist(), "cer": p[1].tolist()} for label, p in pooled.items()}
    return "\n".join(lines), data


def saturation(model, name: str, refs: dict[str, str]) -> tuple[float, np.ndarray]:
    tok = model.tokenizer
    paths = [jai.sample_path(k) for k in refs]
    seqs = [tok.prompt() + ids for ids in jai.transcribe_ids(model, paths, batch_size=len(paths))]
    width = max(map(len, seqs))
    mels = jnp.stack([jai.log_mel(jai.load_audio(p), n_mels=model.dims.n_mels) for p in paths])
    tokens = jnp.asarray([s + [tok.eot] * (width - len(s)) for s in seqs], jnp.int32)
    lens = logit_lens(model, mels, tokens)
    sat = np.concatenate([lens.saturation[i, :len(s)] for i, s in enumerate(seqs)])
    i = list(refs).index(EXAMPLE)
    plot_logit_lens(lens, tok, index=i, max_positions=len(seqs[i]), path=FIGURES / f"logit_lens_{name}.png",
                    title=f"logit lens, {name}: {EXAMPLE}")
    return float(sat.mean()), sat


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--out", default="notes/lens_tables.md")
    args = parser.parse_args()
    FIGURES.mkdir(parents=True, exist_ok=True)
    refs = librivox()
    sections, results, sats = [], {}, {}
    for name in args.models:
        start = time.time()
        model = jai.load(name)
        table, data = encoder_tables(model, name, refs)
        mean_sat, sats[name] = saturation(model, name, refs)
        results[name] = {**data, "mean_saturation": mean_sat, "n_positions": int(sats[name].size),
                         "n_text_layer": model.dims.n_text_layer}
        sections.append(f"### {name} ({model.dims.n_audio_layer} encoder / {model.dims.n_text_layer} "
                        f"decoder layers)\n\n{table}\n\nMean logit-lens saturation layer: "
                        f"**{mean_sat:.2f}** (layers 0..{model.dims.n_text_layer - 1}, "
                        f"{sats[name].size} token positions). ({time.time() - start:.0f} s)\n")
        print(sections[-1], flush=True)
    n_layers = max(results[n]["n_text_layer"] for n in sats)
    plot_saturation_histogram([sats[n] for n in sats], n_layers, labels=list(sats),
                              path=FIGURES / "saturation.png",
                              title="saturation layers, 5 LibriVox clips")
    Path(args.out).write_text("\n".join(sections))
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
