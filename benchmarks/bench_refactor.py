"""Speed before and after a refactor, side by side in one run: the JAX work of bench_forward
(teacher-forced forward, greedy decoding), bench_patching (the head sweep) and bench_probes
(the probe sweep), each timed in a fresh process for two checkouts, alternating, best of the
rounds, after warm-up and ``block_until_ready``. Only the public contract is called, so any two
versions compare.

    python benchmarks/bench_refactor.py --before 1c5b5f3 [--rounds 2]

The ``--before`` commit is checked out into a temporary git worktree; the current working tree
is "after". Writes benchmarks/results/bench_refactor_cpu.json (ratio = after / before time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("forward", "greedy", "decoding_loop", "head_sweep", "probe_sweep")


def _best(fn, repeats: int = 3) -> float:
    import jax
    jax.block_until_ready(fn())  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def worker(kind: str) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import jaxasr_interp as jai

    model = jai.load("tiny.en")
    names = sorted(jai.sample_transcripts())
    mels = jnp.stack([jai.log_mel(jai.load_audio(jai.sample_path(n)), n_mels=80) for n in names])
    tok = model.tokenizer
    seqs = [list(tok.prompt()) + tok.encode(" " + jai.sample_transcripts()[n].strip()) for n in names]
    width = max(map(len, seqs)) + 1
    tokens = jnp.asarray([s + [tok.eot] * (width - len(s)) for s in seqs], jnp.int32)
    if kind == "forward":
        f = jax.jit(jax.vmap(lambda m, t: jai.forward(model.params, m, t, dims=model.dims)[0]))
        return _best(lambda: f(mels, tokens))
    if kind == "greedy":
        paths = [jai.sample_path(n) for n in names]
        return _best(lambda: jnp.asarray(jai.transcribe_ids(model, paths, batch_size=8)[0]), repeats=2)
    if kind == "decoding_loop":  # bench_forward's (c): the KV-cache loop alone, batch 6
        feats = jax.vmap(lambda m: jai.encode(model.params, m, dims=model.dims)[0])(mels)
        bias = jnp.zeros((model.dims.n_vocab,), jnp.float32)  # no suppression
        prompt = jnp.asarray(tok.prompt(), jnp.int32)
        return _best(lambda: jai.greedy_decode(model.params, feats, prompt, tok.eot, bias, bias,
                                           dims=model.dims, max_new_tokens=96))
    if kind == "head_sweep":
        from jaxasr_interp.patching import head_sweep
        feats = jai.encode(model.params, mels[0], dims=model.dims)[0]
        ref = jai.reference_activations(model, tokens[0], ["decoder.cross_attn.z"])["decoder.cross_attn.z"]
        alphas = jnp.array([0.25, 0.5, 0.75, 1.0])
        return _best(lambda: head_sweep(model.params, tokens[0], feats, ref, alphas, dims=model.dims))
    if kind == "probe_sweep":
        from jaxasr_interp.probes import planted_features
        labels = np.arange(400) % 2
        x = planted_features(labels, 16, 256, layers=[3], seed=0)
        return _best(lambda: jnp.asarray(jai.probe_sweep(x, labels, k=5).accuracy), repeats=2)
    raise ValueError(kind)


def run(checkout: Path, kind: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", kind],
                         cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="git commit of the 'before' checkout")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_refactor_cpu.json"))
    args = parser.parse_args()
    if args.worker:
        print(worker(args.worker))
        return
    tmp = Path(tempfile.mkdtemp()) / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(tmp), args.before], cwd=ROOT, check=True,
                   capture_output=True)
    out_path = Path(args.out)
    previous = json.loads(out_path.read_text()) if out_path.exists() else {}
    results = previous.get("results", {}) if previous.get("before") == args.before else {}
    try:
        for kind in args.kinds:
            times = {"before": [], "after": []}
            for _ in range(args.rounds):
                times["before"].append(run(tmp, kind))
                times["after"].append(run(ROOT, kind))
            best = {k: min(v) for k, v in times.items()}
            results[kind] = {"before_s": best["before"], "after_s": best["after"],
                             "ratio_after_over_before": best["after"] / best["before"], "all": times}
            print(kind, json.dumps(results[kind]), flush=True)
            out = {"machine": f"{platform.machine()}, {os.cpu_count()} cpu", "before": args.before,
                   "model": "tiny.en", "clips": 6, "dtype": "float32", "rounds": args.rounds,
                   "results": results}
            out_path.write_text(json.dumps(out, indent=2) + "\n")  # after each kind
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tmp)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
