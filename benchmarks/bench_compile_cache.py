"""Compile once per machine: each command's second run against its first, with JAX's
persistent compilation cache (:mod:`jaxasr_interp.core.compile_cache`).

For each command (``jaxasr-interp report`` on the bundled clip with tiny.en, and every
``jaxasr-interp experiment ...`` at a small size), in fresh processes and fresh output folders:
the first run with an empty cache folder, the second with the folder the first filled, and
(``--control``, the default) a third with the cache off (``JAXASR_INTERP_CACHE=off``), to tell
the cache's share from the operating system's file cache. Wall time of the whole command
(imports, model load, compilation, work). Goal: second / first <= 0.6. Writes the times, the
ratios and the cache's size per command.

    python benchmarks/bench_compile_cache.py [--only report,probe-noise] [--no-control] [--merge]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL_PROBE = ["--n", "6", "--folds", "2", "--seeds", "0", "--l2", "0.01"]
COMMANDS = {
    "report": ["report", "--model", "tiny.en"],
    "repetition": ["experiment", "repetition", "--max-items", "2", "--alphas", "1"],
    "contextual-bias": ["experiment", "contextual-bias", "--max-items", "2"],
    "probe-gender": ["experiment", "probe-gender", *SMALL_PROBE],
    "probe-accent": ["experiment", "probe-accent", *SMALL_PROBE],
    "probe-noise": ["experiment", "probe-noise", *SMALL_PROBE],
    "probe-speech": ["experiment", "probe-speech", *SMALL_PROBE],
    "probe-hallucination": ["experiment", "probe-hallucination", "--n", "6", "--pool", "64", "--folds", "2",
                            "--seeds", "0", "--l2", "0.01"],
}


def cache_size(folder: Path) -> tuple[int, float]:
    """(entries, MB) of a JAX cache folder."""
    files = [p for p in folder.rglob("*-cache") if p.is_file()] if folder.exists() else []
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def run_once(argv: list[str], out: Path, cache: str, timeout: int) -> dict:
    env = {**os.environ, "JAXASR_INTERP_CACHE": cache}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jaxasr_interp.cli", *argv, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "rc": proc.returncode}
    if proc.returncode:
        result["stderr_tail"] = proc.stderr[-1500:]
    return result


def measure(name: str, argv: list[str], work: Path, control: bool, timeout: int) -> dict:
    cache = work / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    first = run_once(argv, work / f"{name}-1", str(cache), timeout)
    entries, mb = cache_size(cache)
    second = run_once(argv, work / f"{name}-2", str(cache), timeout)
    row = {"argv": ["jaxasr-interp", *argv, "--out", "DIR"], "first_s": first["seconds"],
           "second_s": second["seconds"], "second_over_first": second["seconds"] / first["seconds"],
           "cache_entries": entries, "cache_mb": round(mb, 1),
           "cache_entries_after_second": cache_size(cache)[0],
           "rc": [first["rc"], second["rc"]]}
    if control:
        off = run_once(argv, work / f"{name}-off", "off", timeout)
        row.update(cache_off_s=off["seconds"], second_over_cache_off=second["seconds"] / off["seconds"])
        row["rc"].append(off["rc"])
    for run in (first, second):
        if "stderr_tail" in run:
            row.setdefault("stderr_tail", run["stderr_tail"])
    return row


def check_arguments(names: list[str]) -> None:
    """Every command line parses (a typo fails here, not after an hour)."""
    from jaxasr_interp.cli.main import build_parser
    for name in names:
        build_parser().parse_args([*COMMANDS[name], "--out", "x"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(COMMANDS), help="comma-separated commands")
    parser.add_argument("--no-control", action="store_true", help="skip the cache-off run")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_compile_cache_cpu.json"))
    parser.add_argument("--merge", action="store_true", help="replace only these commands' rows in an existing --out")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown command(s) {unknown}; choose from {list(COMMANDS)}")
    check_arguments(names)
    import jax
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cpu", "python": platform.python_version(),
              "jax": jax.__version__, "goal": "second_over_first <= 0.6", "commands": {}}
    with tempfile.TemporaryDirectory(prefix="bench_compile_cache_") as tmp:
        for name in names:
            row = measure(name, COMMANDS[name], Path(tmp), not args.no_control, args.timeout)
            result["commands"][name] = row
            print(f"{name}: first {row['first_s']:.1f} s, second {row['second_s']:.1f} s "
                  f"({row['second_over_first']:.2f})" + (f", cache off {row['cache_off_s']:.1f} s"
                                                         if "cache_off_s" in row else "")
                  + f", {row['cache_entries']} entries / {row['cache_mb']} MB, rc {row['rc']}", flush=True)
    out = Path(args.out)
    if args.merge and out.is_file():  # the other commands' rows kept, in COMMANDS order
        rows = {**json.loads(out.read_text())["commands"], **result["commands"]}
        result["commands"] = {name: rows[name] for name in COMMANDS if name in rows}
    print(json.dumps(result, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    failed = [name for name, row in result["commands"].items() if any(row["rc"])]
    if failed:
        raise SystemExit(f"error: {', '.join(failed)} exited non-zero (stderr_tail in {out}); their times mean nothing")


if __name__ == "__main__":
    main()
