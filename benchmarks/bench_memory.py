"""Memory at the paper's scale: per-device bytes of each analysis, from XLA's memory analysis.

Each analysis (``memory_analyses.py``) is compiled on abstract shapes (``jax.ShapeDtypeStruct``,
no weights) for Whisper large-v3 and Qwen2-Audio-7B on a 1-D mesh of 1 and of 8 host devices
(batch/sweep axis split as the library splits it; Whisper's parameters split FSDP-style as
``whisper.sharding.shard_params`` does, Qwen's as ``qwen2_audio.shard_params``; all
parameters resident, ``keep_unused``). Peak = argument + output + temp - alias, per device; it
fits a chip at <= 80% of its memory (v5e 16 GiB, v4 32 GiB). CPU artefacts corrected (see
docs/scale.md): both XLA:CPU schedulers are compiled and the lower peak kept (the concurrent
one gave the head sweep a 60 GiB peak instead of 12); XLA:CPU keeps float32 copies of bfloat16
weights, so a bfloat16 row's estimate is min(CPU peak, its args + output + float32 temp).

    python benchmarks/bench_memory.py [--devices 1,8] [--only transcribe,head_sweep] [--merge]
    python benchmarks/bench_memory.py --markdown benchmarks/results/memory_fit.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

import jaxasr_interp as jai
from jaxasr_interp import qwen2_audio as qa

sys.path.insert(0, str(Path(__file__).parent))
from memory_analyses import ANALYSES, SIZES  # noqa: E402

GiB = 2 ** 30
CHIPS = {"v5e": 16 * GiB, "v4": 32 * GiB}  # HBM per chip
HEADROOM = 0.2
OUT = Path(__file__).parent / "results" / "memory_fit.json"
SCHEDULERS = ("CONCURRENCY_OPTIMIZED", "MEMORY_OPTIMIZED")  # XLA:CPU's two; the lower peak is kept
ONE_CHIP_GOAL = ("transcribe", "encoder_lens", "head_sweep")


def model_dims(model: str):
    return qa.QWEN2_AUDIO_7B if model == "qwen2-audio-7b" else jai.preset(model)


def per_device_bytes(tree) -> int:
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(math.prod(x.sharding.shard_shape(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)


def measure(name: str, dims, dtype: str, n_devices: int = 1) -> dict:
    """Compile one analysis on abstract shapes over the first ``n_devices`` devices; its
    per-device memory (bytes) from XLA's memory analysis."""
    builder, _, _, axis = ANALYSES[name]
    mesh = Mesh(np.array(jax.devices()[:n_devices]), (axis,))
    fn, args, shape = builder(dims, jnp.dtype(dtype), mesh)
    start = time.perf_counter()
    # keep_unused: the whole parameter tree is resident on device, not only what this program reads
    stats = jax.jit(fn, keep_unused=True).lower(*args).compile().memory_analysis()
    seconds = time.perf_counter() - start
    row = {k: getattr(stats, f"{k}_size_in_bytes") for k in ("argument", "output", "temp", "alias", "generated_code")}
    params = args[0] if name != "probe_sweep" else ()
    return {"analysis": name, "devices": n_devices, "dtype": dtype, "shape": shape, **row,
            "peak": row["argument"] + row["output"] + row["temp"] - row["alias"],
            "param_bytes_per_device": per_device_bytes(params), "compile_s": round(seconds, 1)}


def child(only: list[str]) -> None:
    """Every analysis x dtype on all visible devices; one JSON line each."""
    for name in only:
        _, model, dtypes, _ = ANALYSES[name]
        for dtype in dtypes:
            row = measure(name, model_dims(model), dtype, jax.device_count())
            print(json.dumps({"model": model, **row}), flush=True)


def run_devices(n: int, only: list[str], scheduler: str) -> list[dict]:
    flags = f"--xla_force_host_platform_device_count={n} --xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_{scheduler}"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, __file__, "--child", "--only", ",".join(only)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"the {n}-device run failed:\n{proc.stderr[-4000:]}")
    return [{**json.loads(line), "scheduler": scheduler} for line in proc.stdout.splitlines() if line.startswith("{")]


def lowest_peaks(rows: list[dict]) -> list[dict]:
    """Per (analysis, devices, dtype), the row of the scheduler with the lower peak."""
    best: dict = {}
    for r in rows:
        key = (r["analysis"], r["devices"], r["dtype"])
        seen = best.setdefault(key, r)
        seen.setdefault("peak_by_scheduler", {})[r["scheduler"]] = r["peak"]
        if r["peak"] < seen["peak"]:
            best[key] = {**r, "peak_by_scheduler": seen["peak_by_scheduler"]}
    return list(best.values())


def add_estimates(rows: list[dict]) -> None:
    """``estimate``: the peak judged against the chips (see the module docstring for bfloat16)."""
    f32 = {(r["analysis"], r["devices"]): r for r in rows if r["dtype"] == "float32"}
    for r in rows:
        ref = f32.get((r["analysis"], r["devices"]))
        bound = r["argument"] + r["output"] + ref["temp"] - r["alias"] if r["dtype"] == "bfloat16" and ref else r["peak"]
        r["estimate"] = min(r["peak"], bound)
        r["fit"] = fit(r["estimate"])


def fit(peak: int) -> dict:
    return {chip: {"fits": peak <= (1 - HEADROOM) * cap, "fraction": peak / cap,
                   "shortfall_bytes": max(0, math.ceil(peak - (1 - HEADROOM) * cap))} for chip, cap in CHIPS.items()}


def goals(rows: list[dict]) -> list[dict]:
    """The issue's goals, each judged on the analysis's smallest estimate over dtypes."""
    out = []
    for name in dict.fromkeys(r["analysis"] for r in rows):
        for goal, n in (("v5e-8 slice", 8), ("one v5e chip", 1)):
            cands = [r for r in rows if r["analysis"] == name and r["devices"] == n]
            if not cands or (n == 1 and name not in ONE_CHIP_GOAL):
                continue
            best = min(cands, key=lambda r: r["estimate"])
            out.append({"goal": goal, "analysis": name, "dtype": best["dtype"], "estimate": best["estimate"],
                        "met": best["fit"]["v5e"]["fits"], "shortfall_bytes": best["fit"]["v5e"]["shortfall_bytes"]})
    return out


def gib(b) -> str:
    return f"{b / GiB:.2f}"


def verdict(f: dict) -> str:
    return f"yes ({f['fraction']:.0%})" if f["fits"] else f"no: {gib(f['shortfall_bytes'])} GiB over 80%"


def markdown(result: dict) -> str:
    lines = ["| Analysis | Model | Devices | dtype | Per device GiB | args / temp GiB | v5e 16 GiB | v4 32 GiB | Compile s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        cpu = f" (CPU {gib(r['peak'])})" if r["estimate"] < r["peak"] else ""
        lines.append(f"| {r['analysis']} | {r['model']} | {r['devices']} | {r['dtype']} | {gib(r['estimate'])}{cpu} | "
                     f"{gib(r['argument'])} / {gib(r['temp'])} | {verdict(r['fit']['v5e'])} | "
                     f"{verdict(r['fit']['v4'])} | {r['compile_s']} |")
    lines += ["", "| Goal | Analysis | Best dtype | Per device GiB | Met (80% of 16 GiB = 12.80 GiB) |",
              "|---|---|---|---|---|"]
    for g in result["goals"]:
        met = "met" if g["met"] else f"**not met: short by {gib(g['shortfall_bytes'])} GiB**"
        lines.append(f"| {g['goal']} | {g['analysis']} | {g['dtype']} | {gib(g['estimate'])} | {met} |")
    lines.append("")
    for name in dict.fromkeys(r["analysis"] for r in result["rows"]):
        shapes = dict.fromkeys(f"{r['shape']} ({r['devices']} dev.)" for r in result["rows"] if r["analysis"] == name)
        lines.append(f"- {name}: " + "; ".join(shapes))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1,8")
    parser.add_argument("--only", default=",".join(ANALYSES))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--markdown", metavar="JSON", help="only print the tables of an earlier run")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the --only analyses' rows in an existing --out file (goals recomputed)")
    args = parser.parse_args()
    if args.markdown:
        return print(markdown(json.loads(Path(args.markdown).read_text())))
    only = args.only.split(",")
    if args.child:
        return child(only)
    start = time.perf_counter()
    rows = lowest_peaks([r for n in map(int, args.devices.split(",")) for sched in SCHEDULERS
                         for r in run_devices(n, only, sched)])
    add_estimates(rows)
    out = Path(args.out)
    if args.merge and out.is_file():  # keep the other analyses' rows, in their order
        ran = {r["analysis"] for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"] if r["analysis"] not in ran] + rows
        rows.sort(key=lambda r: (r["devices"], list(ANALYSES).index(r["analysis"])))
    result = {"jax": jax.__version__, "backend": "cpu (host devices)", "cpu": platform.processor() or platform.machine(),
              "cpu_schedulers": SCHEDULERS, "chips_bytes": CHIPS, "headroom": HEADROOM, "sizes": SIZES, "rows": rows, "goals": goals(rows),
              "seconds": round(time.perf_counter() - start, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"\n{result['seconds']} s; wrote {out}")


if __name__ == "__main__":
    main()
