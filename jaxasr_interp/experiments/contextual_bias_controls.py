"""Contextual bias with controls: one command, sizes in a checked-in config, a results file.

``python -m jaxasr_interp.experiments.contextual_bias_controls --config configs/contextual_bias.json
--model tiny.en --out results/`` writes ``results/contextual_bias_<model>.json``. The config
names the stimuli (``pairs``: ``"ALL_PAIRS"`` = 100 minimal pairs x 4 templates = 400
sentences, or a list of ``"spoken/expected"`` names; ``max_pairs``: the first N of them),
the espeak-ng ``voice`` / ``speed``, the swept ``families`` and ``alphas``, the white-noise
``seeds`` and the ``control_seed`` / ``split_seed``.

Every contextual error (:mod:`.contextual_bias`: the expected word written, the spoken one
not) is swept per family x layer (x head) x alpha, teacher-forced, counted as *flipped* when
the top-1 token at the error position becomes the spoken word's first token, under

- the white-noise reference of each seed in ``seeds`` (``patching.reference.white_noise``);
- a *random perturbation of matched norm* (:func:`matched_random`): at the same site and
  layer, the patch delta ``ref - clean`` (seed ``seeds[0]``) replaced by a random direction
  with the delta's norm at every position (and head), same alpha.

The report (:mod:`.contextual_bias_controls_report`) gives every rate with n and a 95%
bootstrap interval over items, and a split-half check: the word pairs are split in two
(:func:`split_halves`: a pair is never on both sides), the best cell is chosen on one half and
its rate reported on the other, both ways. Resumable (:mod:`.stages`): transcripts per batch
and sweeps per error are checkpointed in ``--work`` (default ``runs/contextual_bias/<model>``,
also the audio cache); a rerun gives a bit-identical file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from jaxasr_interp.experiments.contextual_bias import _config, _items, _no_errors, classify, stimulus_audio
from jaxasr_interp.experiments.contextual_bias_controls_report import (  # noqa: F401
    docs_table, markdown, split_halves, summarize)
from jaxasr_interp.experiments.contextual_bias_sweeps import Setup, flips_and_effects, setup
from jaxasr_interp.experiments.stages import Work, numerics, transcribe
from jaxasr_interp.patching.decoding import ids_to_text
from jaxasr_interp.patching.sweeps import FAMILIES

COMMAND = "python -m jaxasr_interp.experiments.contextual_bias_controls --config configs/contextual_bias.json"


def load_config(path) -> dict:
    cfg = json.loads(Path(path).read_text())
    missing = {"pairs", "families", "alphas", "seeds"} - set(cfg)
    if missing:
        raise ValueError(f"{path}: the config lacks {sorted(missing)}")
    if len(cfg["seeds"]) < 1:
        raise ValueError(f"{path}: seeds must name at least one white-noise seed")
    return cfg


def stimuli_of(cfg: dict) -> tuple[list, int]:
    """(every sentence of the config's pairs, a subset of ALL_PAIRS, x the four templates; the
    number of them in the run: those of the first ``max_pairs`` pairs)."""
    from jaxasr_interp.data.minimal_pairs import ALL_PAIRS, generate
    names = {f"{s}/{e}": (s, e) for s, e in ALL_PAIRS}
    chosen = list(names) if cfg["pairs"] == "ALL_PAIRS" else list(cfg["pairs"])
    unknown = [p for p in chosen if p not in names]
    if unknown:
        raise ValueError(f"unknown pairs {unknown}; pairs are 'spoken/expected' names of ALL_PAIRS")
    stimuli = generate(pairs={names[p]: ALL_PAIRS[names[p]] for p in chosen})
    used = {s.pair for s in stimuli[:4 * (cfg.get("max_pairs") or len(chosen))]}
    return stimuli, sum(s.pair in used for s in stimuli)


def matched_random(delta, rng: np.random.Generator) -> np.ndarray:
    """A random direction (Gaussian, normalised over the last axis) with the norm of ``delta``
    at every position: ``delta`` [..., D] -> [..., D], float32."""
    delta = np.asarray(delta, np.float64)
    g = rng.standard_normal(delta.shape)
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    return (g * np.linalg.norm(delta, axis=-1, keepdims=True)).astype(np.float32)


def clean_sites(s: Setup, mel, tokens) -> dict:
    """The clean run's stacked site of every family of ``s`` (teacher-forced on ``tokens``)."""
    from jaxasr_interp.whisper.model import decode, encode
    m, enc = s.model, [FAMILIES[f] for f in s.families if f.startswith("encoder")]
    features, acts = encode(m.params, mel, dims=m.dims, capture=enc, **s.numerics)
    dec = [FAMILIES[f] for f in s.families if f.startswith("decoder")]
    if dec:
        acts = {**acts, **decode(m.params, tokens, features, dims=m.dims, capture=dec, **s.numerics)[1]}
    return {f: acts[FAMILIES[f]] for f in s.families}


def sweep_controls(setups: list, audio, row, p: int, spoken: int, rng_seed) -> dict:
    """One error: ``flips seed<k> <family>`` for each noise reference and ``flips random
    <family>`` for the matched-norm random perturbation, each [L, P, A] booleans."""
    from jaxasr_interp.whisper.audio import log_mel
    s0 = setups[0]
    tokens, pos = s0.tokens(row), len(s0.prompt) + p - 1
    mel = log_mel(audio, n_mels=s0.model.dims.n_mels)
    out, first = {}, None
    for k, s in enumerate(setups):
        refs = {**s.noise_acts, **s.decoder_refs(tokens, s.families)}
        refs = {f: refs[FAMILIES[f]] for f in s.families}
        first = refs if k == 0 else first
        flips = flips_and_effects(s, mel, tokens, refs, pos, spoken)
        out.update({f"flips seed{k} {f}": flips[f"flips {f}"] for f in s.families})
    clean = clean_sites(s0, mel, tokens)
    rng = np.random.default_rng(rng_seed)  # [control_seed, the sentence's index]: one stream per error
    rand = {f: jnp.asarray(np.asarray(clean[f], np.float32) + matched_random(
        np.asarray(first[f], np.float32) - np.asarray(clean[f], np.float32), rng)) for f in s0.families}
    flips = flips_and_effects(s0, mel, tokens, rand, pos, spoken)
    out.update({f"flips random {f}": flips[f"flips {f}"] for f in s0.families})
    return out


def _sweeps(work: Work, setups, audios, items, control_seed: int, *, n_pairs: int, block: int = 10) -> list:
    """Every error's sweeps, one stage per block of ``block`` pairs (``sweeps_pairs_000-010``...):
    a run with a smaller ``max_pairs`` reuses the finished blocks."""
    parts = []
    for lo in range(0, n_pairs, block):
        hi = min(lo + block, n_pairs)
        todo = [it for it in items if lo <= it[0] // 4 < hi]  # pair-major: 4 templates per pair
        if todo:
            parts += work.map(f"sweeps_pairs_{lo:03d}-{hi:03d}", lambda it: sweep_controls(
                setups, audios[it[0]], *it[1:], [control_seed, it[0]]), todo,
                key=[[i, p, spoken] for i, _, p, spoken in todo])
    return parts


def run(model, cfg: dict, work_dir, *, name: str | None = None) -> dict:
    """The whole experiment under ``cfg`` (:func:`load_config`) -> the results dict."""
    from jaxasr_interp.patching.reference import white_noise
    stimuli, n_used = stimuli_of(cfg)
    tok, num = model.tokenizer, numerics(model, cfg.get("dtype"), cfg.get("precision", "highest"))
    voice, speed, mnt = cfg.get("voice", "en-us"), cfg.get("speed", 150), cfg.get("max_new_tokens", 32)
    audios = stimulus_audio(stimuli, work_dir, voice=voice, speed=speed)
    families = tuple(cfg["families"])
    alphas = {f: tuple(cfg["alphas"]) for f in families}
    settings = dict(max_new_tokens=mnt, voice=voice, speed=speed)
    # the transcripts cover every pair (max_pairs only trims the sweeps): a smaller rerun reuses them
    ids = transcribe(Work(Path(work_dir) / "transcripts", _config(model, num, stimuli, audios, (), {}, **settings),
                          what="contextual-bias transcripts"), "transcripts", model, audios, max_new_tokens=mnt, **num)
    work = Work(Path(work_dir) / "checkpoints", _config(model, num, stimuli, audios, families, alphas, controls={
        k: v for k, v in cfg.items() if k != "max_pairs"}, **settings), what="contextual-bias controls")
    every = [classify(ids_to_text(tok, row), s) for s, row in zip(stimuli, ids)]  # all pairs, swept or not
    stimuli, audios, ids = stimuli[:n_used], audios[:n_used], ids[:n_used]
    classes = [classify(ids_to_text(tok, row), s) for s, row in zip(stimuli, ids)]
    items, ambiguous = _items(model, stimuli, ids, None)
    if not items:
        raise _no_errors(model, classes, ambiguous)
    setups = [setup(model, families, alphas, white_noise(seed=seed), max_new_tokens=mnt, chunk=cfg.get("chunk", 8),
                    attribution=False, numerics=num) for seed in cfg["seeds"]]
    parts = _sweeps(work, setups, audios, items, cfg.get("control_seed", 0), n_pairs=n_used // 4)
    errors = [dict(sentence=stimuli[i].sentence, pair=stimuli[i].pair, transcript=ids_to_text(tok, row))
              for i, row, _, _ in items]
    return summarize(parts, cfg, families, alphas, classes, errors, ambiguous,
                     model=name or model.source, n_sentences=len(stimuli), transcribed=every)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/contextual_bias.json")
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--out", default="results/")
    ap.add_argument("--work", default=None, help="checkpoints and audio (default runs/contextual_bias/<model>)")
    ap.add_argument("--max-pairs", type=int, default=None, help="override the config's max_pairs (recorded)")
    ap.add_argument("--markdown", action="store_true", help="print the table of an existing results file")
    args = ap.parse_args(argv)
    name = Path(args.model).name
    path = Path(args.out) / f"contextual_bias_{name}.json"
    if args.markdown:
        result = json.loads(path.read_text())
        print(docs_table(result))
        return result
    import jaxasr_interp as jai
    cfg = load_config(args.config)
    if args.max_pairs is not None:
        cfg["max_pairs"] = args.max_pairs
    start = time.time()
    result = run(jai.load(args.model), cfg, args.work or Path("runs/contextual_bias") / name, name=name)
    result["command"] = f"{COMMAND} --model {args.model} --out {args.out}" + (
        f" --max-pairs {args.max_pairs}" if args.max_pairs is not None else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(docs_table(result))
    print(f"{time.time() - start:.0f} s -> {path}")
    return result


if __name__ == "__main__":
    main()
