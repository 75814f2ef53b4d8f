"""Encoder attention window: does Whisper's encoder work locally?

Every encoder self-attention pattern is restricted to a band of keys ``|query - key| <= k``
(:func:`jaxasr_interp.core.edits.restrict`: the softmax renormalised over the band, the same as
masking the logits outside it with -inf) and the clips are transcribed greedily with the edit
in place. The encoder has ``n_audio_ctx = 1500`` positions for its 30 s window, 20 ms each, so
``k`` frames is ``+-20k`` ms: k = 10, 20, 50, 75, 150 is +-0.2, 0.4, 1, 1.5, 3 s ("all" is the
clean model). Each k is applied to every layer at once and to each layer alone.

Control (every layer at once): a random key mask keeping exactly as many keys per query as the
band does, at random positions (the same mask in every layer), so that a drop in WER from
*which* keys are kept (locality) is told apart from one from *how many* are kept.

Reported per cell: corpus WER (errors / reference words, Whisper's English normaliser), the
mean of per-clip WERs, and the paired difference from the clean corpus WER, each with a 95%
percentile bootstrap interval over clips (:mod:`jaxasr_interp.core.stats`). Clips
(:func:`speech_clips`): the bundled JFK and LibriVox clips, pocketsphinx-testdata's "cards"
utterances and its ``goforward.raw``, and optionally sentences synthesized with piper (or
espeak-ng). One documented command writes ``results/attention_window_<model>.json``::

    python -m jaxasr_interp.experiments.attention_window --model tiny.en --out results/
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

import jaxasr_interp as jai
from jaxasr_interp.core.stats import bootstrap_ci, interval, paired_ratio_diff_ci, ratio_ci
from jaxasr_interp.whisper.audio import load_audio, sample_transcripts
from jaxasr_interp.whisper.text_metrics import normalize, rate, word_errors

KS = (10, 20, 50, 75, 150, None)  # None: every key (the clean model)
FRAME_MS = 20  # 30 s over n_audio_ctx = 1500 encoder positions
SITE = "encoder.attn.pattern"
POCKETSPHINX = Path("/usr/share/pocketsphinx/test/data")
GOFORWARD = "go forward ten meters"  # the words pocketsphinx's own tests expect of goforward.raw
COMMAND = "python -m jaxasr_interp.experiments.attention_window --model {model} --out results/"


class Clip(NamedTuple):
    name: str
    audio: np.ndarray
    text: str


def speech_clips(n_synth: int = 0, seed: int = 0) -> list[Clip]:
    """The real speech at hand (bundled clips; pocketsphinx-testdata's cards and goforward
    utterances when installed) plus ``n_synth`` synthesized sentences."""
    clips = [Clip(n, load_audio(jai.sample_path(n)), t) for n, t in sample_transcripts().items()]
    cards = POCKETSPHINX / "cards" / "cards.transcription"
    if cards.is_file():
        for line in cards.read_text().splitlines():
            text, ident = line.replace("<s>", "").replace("</s>", "").rsplit("(", 1)
            path = cards.parent / f"{ident.strip(') ')}.wav"
            clips.append(Clip(f"cards/{path.name}", load_audio(path), text.strip()))
    raw = POCKETSPHINX / "goforward.raw"
    if raw.is_file():  # headerless 16 kHz 16-bit mono PCM
        clips.append(Clip(raw.name, np.fromfile(raw, "<i2").astype(np.float32) / 32768, GOFORWARD))
    return clips + synthesized(n_synth, seed)


def synthesized(n: int, seed: int = 0) -> list[Clip]:
    """``n`` random closed-vocabulary sentences (:func:`..data.synth.sentences`), spoken by
    piper when it is installed, else espeak-ng; both deterministic."""
    if n == 0:
        return []
    from jaxasr_interp.data import synth
    texts = synth.sentences(np.random.default_rng(seed), n)
    if synth.piper_available():
        voice = synth.piper_voice()
        return [Clip(f"piper/{i:02d}", synth.piper_speech(voice, t), t) for i, t in enumerate(texts)]
    return [Clip(f"espeak/{i:02d}", synth.espeak(t, "en-us"), t) for i, t in enumerate(texts)]


def band(n: int, k: int) -> np.ndarray:
    """``[n, n]`` 0/1: key ``j`` kept for query ``i`` when ``|i - j| <= k``."""
    i = np.arange(n)
    return (np.abs(i[:, None] - i[None, :]) <= k).astype(np.float32)


def random_keys(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``[n, n]`` 0/1: as many keys per query as :func:`band` keeps, drawn at random."""
    counts = band(n, k).sum(1).astype(int)
    order = np.argsort(np.random.default_rng(seed).random((n, n)), axis=1)
    keep = np.zeros((n, n), np.float32)
    rows = np.repeat(np.arange(n), counts)
    keep[rows, np.concatenate([order[i, :c] for i, c in enumerate(counts)])] = 1.0
    return keep


def conditions(n_layer: int, ks=KS) -> list[dict]:
    """Every edited cell: (k, layers "all" or one index, mask "band" or "random")."""
    out = []
    for k in (k for k in ks if k is not None):
        out += [dict(k=k, layers="all", mask="band"), dict(k=k, layers="all", mask="random")]
        out += [dict(k=k, layers=layer, mask="band") for layer in range(n_layer)]
    return out


def _edit(cell: dict, n: int, seed: int):
    keep = band(n, cell["k"]) if cell["mask"] == "band" else random_keys(n, cell["k"], seed)
    return {SITE: jai.restrict(keep, layers=None if cell["layers"] == "all" else [cell["layers"]])}


def _errors(texts: list[str], clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
    pairs = [word_errors(normalize(c.text), normalize(t)) for c, t in zip(clips, texts)]
    return np.array([e for e, _ in pairs]), np.array([n for _, n in pairs])


def _scores(errors, words, clean_errors, *, n_boot: int, seed: int) -> dict:
    n, kw = len(words), dict(n_boot=n_boot, seed=seed)
    rates = np.array([rate(e, w) for e, w in zip(errors, words)])
    out = {"wer": interval(ratio_ci(errors, words, **kw), n),
           "mean_wer": interval(bootstrap_ci(rates, **kw), n)}
    if clean_errors is not None:
        out["delta_wer"] = interval(paired_ratio_diff_ci(errors, clean_errors, words, **kw), n)
    return out


def run(model, clips: list[Clip] | None = None, *, name: str | None = None, ks=KS,
        max_new_tokens: int = 48, n_boot: int = 1000, seed: int = 0, out=None,
        progress: bool = True, precision: str | None = "highest") -> dict:
    """Transcribe ``clips`` clean and under every cell of :func:`conditions`; write
    ``out/attention_window_<name>.json`` when ``out`` is given. Returns the results dict."""
    clips = speech_clips() if clips is None else clips
    name = name or Path(str(model.source)).name
    audio, n_ctx = [c.audio for c in clips], model.dims.n_audio_ctx
    settings = dict(batch_size=len(clips), max_new_tokens=max_new_tokens, precision=precision)
    clean_texts = jai.transcribe(model, audio, **settings)
    clean_errors, words = _errors(clean_texts, clips)
    cells = []
    for cell in conditions(model.dims.n_audio_layer, ks):
        texts = jai.transcribe(model, audio, edits=_edit(cell, n_ctx, seed), **settings)
        errors, _ = _errors(texts, clips)
        cells.append({**cell, "ms": cell["k"] * FRAME_MS, "errors": errors.tolist(), "texts": texts,
                      **_scores(errors, words, clean_errors, n_boot=n_boot, seed=seed)})
        if progress:
            print(f"k={cell['k']} layers={cell['layers']} {cell['mask']}: WER {cells[-1]['wer']['value']:.3f}",
                  flush=True)
    result = {"experiment": "attention_window", "model": name,
              "config": dict(ks=[k for k in ks if k is not None], frame_ms=FRAME_MS, n_audio_ctx=n_ctx,
                             site=SITE, max_new_tokens=max_new_tokens, n_boot=n_boot, seed=seed,
                             normalizer="english", control="random keys, same count per query",
                             command=COMMAND.format(model=name)),
              "n": len(clips), "n_words": int(words.sum()),
              "clips": [{"name": c.name, "text": c.text, "words": int(w)} for c, w in zip(clips, words)],
              "clean": {"errors": clean_errors.tolist(), "texts": clean_texts,
                        **_scores(clean_errors, words, None, n_boot=n_boot, seed=seed)},
              "cells": cells}
    if out is not None:
        write(result, out)
    return result


def write(result: dict, out) -> Path:
    path = Path(out) / f"{result['experiment']}_{result['model']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def _ci(c: dict, pct: bool = True) -> str:
    f = 100 if pct else 1
    return f"{f * c['value']:.1f} [{f * c['lo']:.1f}, {f * c['hi']:.1f}]"


def markdown(result: dict) -> str:
    """The tables of docs/beyond_paper.md, from one results file (WER in %)."""
    cells, clean = result["cells"], result["clean"]
    find = {(c["k"], c["layers"], c["mask"]): c for c in cells}
    ks = result["config"]["ks"]
    lines = [f"**{result['model']}**: n = {result['n']} clips, {result['n_words']} words; clean corpus "
             f"WER {_ci(clean['wer'])}%, mean per-clip WER {_ci(clean['mean_wer'])}%.", "",
             "| k (frames) | window | band, all layers: WER % | ΔWER vs clean | random keys (control): WER % "
             "| ΔWER vs clean |", "|---|---|---|---|---|---|"]
    for k in ks:
        b, r = find[(k, "all", "band")], find[(k, "all", "random")]
        lines.append(f"| {k} | ±{k * FRAME_MS / 1000:g} s | {_ci(b['wer'])} | {_ci(b['delta_wer'])} | "
                     f"{_ci(r['wer'])} | {_ci(r['delta_wer'])} |")
    layers = sorted({c["layers"] for c in cells if c["layers"] != "all"})
    lines += ["", "| band on one layer: WER % | " + " | ".join(f"k = {k}" for k in ks) + " |",
              "|---|" + "---|" * len(ks)]
    for layer in layers:
        lines.append(f"| layer {layer} | " + " | ".join(_ci(find[(k, layer, 'band')]['wer']) for k in ks) + " |")
    return "\n".join(lines)


def module_main(argv, *, description: str, experiment: str, run, markdown, synth: int,
                add_arguments=None, run_kwargs=None) -> dict:
    """``python -m jaxasr_interp.experiments.<experiment>``: run on ``--model`` and write
    ``OUT/<experiment>_<model>.json``, printing its tables (``markdown``) and the time taken, or
    with ``--markdown`` reprint the tables of that file. ``add_arguments(parser)`` adds the
    module's own options; ``run_kwargs(args)`` turns them into keywords of ``run``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", default="results/")
    parser.add_argument("--synth", type=int, default=synth, help="synthesized sentences added to the clips")
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--markdown", action="store_true", help="print the tables of an existing results file")
    args = parser.parse_args(argv)
    if args.markdown:
        result = json.loads((Path(args.out) / f"{experiment}_{Path(args.model).name}.json").read_text())
        print(markdown(result))
        return result
    start = time.time()
    result = run(jai.load(args.model), speech_clips(args.synth), name=Path(args.model).name, out=args.out,
                 **(run_kwargs(args) if run_kwargs is not None else {}))
    print(markdown(result))
    print(f"{time.time() - start:.0f} s")
    return result


def main(argv=None) -> dict:
    return module_main(argv, description=__doc__.split("\n")[0], experiment="attention_window", run=run,
                       markdown=markdown, synth=0,
                       add_arguments=lambda p: p.add_argument("--max-new-tokens", type=int, default=48),
                       run_kwargs=lambda args: {"max_new_tokens": args.max_new_tokens})

if __name__ == "__main__":
    main()
