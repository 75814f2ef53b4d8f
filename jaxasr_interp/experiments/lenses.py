"""The lens results at size: encoder lens, logit-lens saturation and tuned vs plain lens.

    python -m jaxasr_interp.experiments.lenses --config configs/lenses.json --model tiny.en \
        --out results/ [--work runs/lenses]

writes ``results/lenses_<model>.json`` (schema: :mod:`.lenses_report`, which also renders the
docs table, :func:`docs_table`). Clips (``config["real"]``, ``config["synth"]``: clips per
source): real recordings with their documented transcripts (:mod:`..data.real`) and sentences
synthesized by the offline engines (:func:`..data.engines.speak`), their texts the references.
A seeded split holds out ``split.heldout_fraction`` of the clips: the tuned lens is trained on
the rest and evaluated on them, then the halves swap (2-fold cross-fitting), so every clip
is scored by a translator trained without it. ``config["models"][model]`` overrides settings per model (a
smaller run is then recorded in the JSON's ``config``).

Stages (:mod:`.stages`, resumable with ``--work``): greedy transcripts, the logit lens over all
clips (a chunk per batch), one encoder-lens run per setting, per cross-fitting fold the
decoder translator's training and the tuned lens on the clips it did not see (fold 1's stages
``train_swap``, ``tuned_lens_swap``). Rerun the same command and finished stages are read back
(identical JSON); another configuration in the same ``--work`` is a one-line error.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxasr_interp.experiments import lenses_report as report
from jaxasr_interp.experiments.lens_stages import pack_encoder_lens, unpack_encoder_lens
from jaxasr_interp.experiments.stages import Work, transcribe
from jaxasr_interp.whisper.tokenizer import teacher_tokens

docs_table = report.docs_table  # the docs/lenses.md table of one results file
ENCODER_RUNS = {"plain": {}, "suppress": {"suppress": True}, "no_ln_post": {"ln_post": False}}


def settings(config: dict, model_name: str) -> dict:
    """The configuration with the model's overrides applied (``models`` dropped)."""
    out = {k: copy.deepcopy(v) for k, v in config.items() if k not in ("models", "_doc")}
    for key, value in config.get("models", {}).get(model_name, {}).items():
        out[key] = {**out[key], **value} if isinstance(value, dict) and key in out else value
    return out


def build_clips(cfg: dict) -> list[dict]:
    """``[{name, source, text, audio}]``: real clips first (per source, in :func:`real.clips`
    order), then synthesized ones, each speaking two consecutive config sentences."""
    from jaxasr_interp.data import engines, real
    out = []
    for source, n in cfg["real"].items():
        chosen = [c for c in real.clips() if c.name.split("/")[0] == source][:n]
        out += [dict(name=c.name, source=source, text=c.transcript, audio=real.load(c)) for c in chosen]
    sentences, k = cfg["sentences"], 0
    for engine, n in cfg["synth"].items():
        voices = engines.installed_voices([engine])
        if n and not voices:
            engines.require(engine)
        for i in range(n):
            voice = voices[(i * len(voices)) // n]
            text = " ".join(sentences[(2 * k + j) % len(sentences)] for j in range(2))
            out.append(dict(name=f"{engine}/{voice.voice}/{k:02d}", source=engine, text=text,
                            audio=engines.speak(voice, text)))
            k += 1
    return out


def heldout_mask(n: int, split: dict) -> np.ndarray:
    """A seeded choice of ``round(fraction * n)`` held-out clips (at least one each side)."""
    n_out = min(max(int(round(split["heldout_fraction"] * n)), 1), n - 1)
    mask = np.zeros(n, bool)
    mask[np.random.default_rng(split["seed"]).permutation(n)[:n_out]] = True
    return mask


def crossfit_folds(held: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two cross-fitting folds of a split: (train, test) = (kept, held out), then swapped,
    so that every clip is scored once by a translator that never saw it."""
    kept, out = np.nonzero(~held)[0], np.nonzero(held)[0]
    return [(kept, out), (out, kept)]


def _mels(model, audios) -> jnp.ndarray:
    import jaxasr_interp as jai
    return jnp.stack([jai.log_mel(a, n_mels=model.dims.n_mels) for a in audios])


def _lens_chunk(model, mels, seqs, translator=None) -> dict:
    """Saturation [b, T] and resid_post KL [b, L, T] of a teacher-forced batch (eot-padded)."""
    from jaxasr_interp.lenses.logit import logit_lens
    width = max(map(len, seqs))
    eot = model.tokenizer.eot
    tokens = jnp.asarray([s + [eot] * (width - len(s)) for s in seqs], jnp.int32)
    lens = logit_lens(model, mels, tokens, sites=("resid_post",), translator=translator)
    return dict(saturation=lens.saturation, kl=lens.site("resid_post")["kl"], final_ids=lens.final_ids)


def logit_lens_stage(work: Work, stage: str, model, mels, seqs, batch: int, translator=None) -> list[dict]:
    """Per clip ``{saturation [T], kl [L, T], final_ids [T]}`` cut to its own length."""
    starts = list(range(0, len(seqs), batch))
    parts = work.map(stage, lambda i: _lens_chunk(model, mels[i:i + batch], seqs[i:i + batch], translator), starts)
    out = []
    for i, part in zip(starts, parts):
        for j, seq in enumerate(seqs[i:i + batch]):
            n = len(seq)
            out.append(dict(saturation=part["saturation"][j, :n], kl=part["kl"][j][:, :n],
                            final_ids=part["final_ids"][j, :n]))
    return out


def encoder_stage(work: Work, model, audios, texts, cfg: dict) -> dict:
    """Per encoder-lens run (``cfg["runs"]``): the list of :class:`EncoderLens`, one per clip."""
    from jaxasr_interp.lenses.encoder import encoder_lens

    def one(label):
        return pack_encoder_lens(encoder_lens(model, audios, texts, max_new_tokens=cfg["max_new_tokens"],
                                              batch_size=cfg["batch_size"], **ENCODER_RUNS[label]))
    return {label: unpack_encoder_lens(r) for label, r in zip(cfg["runs"], work.map("encoder_lens", one, cfg["runs"]))}


def train_stage(work: Work, model, mels, seqs, cfg: dict, stage: str = "train") -> tuple[dict, np.ndarray]:
    """The decoder translator trained on (mels, seqs) and its loss curve."""
    from jaxasr_interp.lenses.tuned import fit_translators

    def one(_):
        tr, losses = fit_translators(model.params, model.dims, mels, seqs, pad=model.tokenizer.eot,
                                     which=("decoder",), steps=cfg["steps"], lr=cfg["lr"],
                                     weight_decay=cfg["weight_decay"])
        return dict(weight=tr["decoder"]["weight"], bias=tr["decoder"]["bias"], loss=losses["decoder"])
    (out,) = work.map(stage, one, ["decoder translator"])
    return {"weight": jnp.asarray(out["weight"]), "bias": jnp.asarray(out["bias"])}, out["loss"]


def run(model, cfg: dict, work: Work) -> dict:
    """Every stage; returns the results dict (see :mod:`.lenses_report`)."""
    clips = build_clips(cfg)
    audios, texts = [c["audio"] for c in clips], [c["text"] for c in clips]
    tok = model.tokenizer
    ids = transcribe(work, "transcripts", model, audios, max_new_tokens=model.dims.n_text_ctx // 2,
                     batch_size=cfg["logit_lens"]["batch_size"])
    seqs = [teacher_tokens(tok.prompt(), i, tok.eot) for i in ids]
    mels = _mels(model, audios)
    batch = cfg["logit_lens"]["batch_size"]
    plain = logit_lens_stage(work, "logit_lens", model, mels, seqs, batch)
    enc = encoder_stage(work, model, audios, texts, cfg["encoder_lens"])
    held = heldout_mask(len(clips), cfg["split"])
    tuned, losses = [None] * len(clips), []
    for fold, (train_idx, test_idx) in enumerate(crossfit_folds(held)):  # stage names of fold 0 predate fold 1
        suffix = "" if fold == 0 else "_swap"
        translator, loss = train_stage(work, model, mels[train_idx], [seqs[i] for i in train_idx],
                                       cfg["tuned_lens"], stage="train" + suffix)
        rows = logit_lens_stage(work, "tuned_lens" + suffix, model, mels[test_idx], [seqs[i] for i in test_idx],
                                batch, translator)
        for i, row in zip(test_idx, rows):
            tuned[i] = row
        losses.append(loss)
    kinds = [report.position_kinds(s, len(tok.prompt()), tok.eot) for s in seqs]
    return report.results(model, cfg, clips, held, seqs, kinds, plain, enc, tuned, losses)


def render(paths, docs="docs/lenses.md", figure="docs/figures/saturation_text_tokens.png"):
    """Write each results file's (``lenses_<model>.json``) table between its markers in ``docs``,
    and the histogram of all of them."""
    text, all_results = Path(docs).read_text(), []
    for path in paths:
        all_results.append(json.loads(Path(path).read_text()))
        text = report.fill_marker(text, Path(path).stem.removeprefix("lenses_"), docs_table(all_results[-1]))
    Path(docs).write_text(text)
    report.saturation_figure(all_results, figure)


def main(argv=None):
    import jaxasr_interp as jai
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/lenses.json")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--out", default="results/")
    parser.add_argument("--work", default=None, help="checkpoint folder (resumed on rerun); default: in memory")
    parser.add_argument("--render", nargs="+", default=None, metavar="JSON",
                        help="no run: fill docs/lenses.md's marked tables and the figure from these results files")
    args = parser.parse_args(argv)
    if args.render:
        return render(args.render)
    start = time.time()
    cfg = settings(json.loads(Path(args.config).read_text()), args.model)
    model = jai.load(args.model)
    work = Work(None if args.work is None else Path(args.work) / args.model.replace("/", "_"),
                dict(experiment="lenses", model=args.model, config=cfg), what="lenses")
    results = run(model, cfg, work)
    out = Path(args.out) / f"lenses_{args.model.replace('/', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(docs_table(results))
    print(f"wrote {out} ({time.time() - start:.0f} s)")
    return results


__all__ = ["build_clips", "docs_table", "heldout_mask", "main", "run", "settings"]

if __name__ == "__main__":
    main()
