"""Where a command's time goes once its programs are in the compilation cache.

For each command (default: the two of ``bench_compile_cache.py`` that the cache helps least), a
first run fills a fresh cache folder, then a second run executes under ``cProfile``; the
cumulative seconds of the phases that matter are written with their share of the run:
imports, model load, compilation (programs loaded from the cache or compiled again: those that
took under the cache's 0.2 s threshold are not written to it), feature extraction,
transcription, probing. Wall times include ``cProfile``'s overhead (a few percent).

    python benchmarks/profile_commands.py [--only probe-gender,contextual-bias]
        [--out benchmarks/results/profile_commands_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_compile_cache import COMMANDS  # noqa: E402

# phase -> (file suffix, function name) whose cumulative time is the phase's
PHASES = {
    "imports": ("<frozen importlib._bootstrap>", "_find_and_load"),
    "model_load": ("whisper/api.py", "load"),
    "compile_or_cache_load": ("jax/_src/compiler.py", "compile_or_get_cached"),
    "compiled_again (not cached)": ("jax/_src/compiler.py", "_compile_and_write_cache"),
    "feature_extraction": ("probes/features.py", "extract_features"),
    "transcription": ("whisper/api.py", "transcribe_ids"),
    "probe_sweeps": ("probes/sweep.py", "probe_sweep"),
    "speech_synthesis (subprocesses)": ("subprocess.py", "run"),
}


def phases(profile: Path) -> dict:
    stats = pstats.Stats(str(profile)).stats
    total = max(v[3] for v in stats.values())
    out = {"total_s": round(total, 2)}
    for phase, (suffix, name) in PHASES.items():
        times = [v[3] for (f, _, n), v in stats.items() if n == name and f.endswith(suffix)]
        out[phase] = {"s": round(max(times, default=0.0), 2), "share": round(max(times, default=0.0) / total, 3)}
    return out


def profile(name: str, tmp: Path) -> dict:
    env = {**os.environ, "JAXASR_INTERP_CACHE": str(tmp / f"cache_{name}")}
    base = [sys.executable, "-m", "jaxasr_interp.cli", *COMMANDS[name]]
    subprocess.run([*base, "--out", str(tmp / f"a_{name}")], env=env, check=True, capture_output=True)
    prof = tmp / f"{name}.prof"
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "jaxasr_interp.cli",
                    *COMMANDS[name], "--out", str(tmp / f"b_{name}")], env=env, check=True, capture_output=True)
    return {"argv": ["jaxasr-interp", *COMMANDS[name]], "second_run": phases(prof)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="probe-gender,contextual-bias")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "profile_commands_cpu.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile_commands_") as tmp:
        result = {"note": "cumulative seconds under cProfile of the second run (cache warm)",
                  "commands": {name: profile(name, Path(tmp)) for name in args.only.split(",")}}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
