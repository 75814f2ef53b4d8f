"""The whole reproduction in one command: every experiment of docs/ at its documented sizes.

    jaxasr-interp experiment all --model tiny.en --out DIR [--only lenses,probes] [--configs configs]

Each step is one experiment's own command (``main(argv)`` of its module) with its checked-in
config from ``configs/``; its results JSON goes to ``DIR`` and its checkpoints to
``DIR/work/<step>``. The run is resumable at two levels: a step whose results file exists and
whose manifest entry records the same arguments and config contents is skipped; an
interrupted step resumes from its own checkpoints (the experiments that have them). Each
step's wall time and CPU time go to ``DIR/all.json``, so the slowest one can be profiled.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from pathlib import Path
from typing import Callable, NamedTuple


class Step(NamedTuple):
    module: str            # the module whose main(argv) runs the step
    result: str            # its results file name, {model} filled in
    config: str | None     # its config file in the configs folder, or None
    argv: Callable         # (model, out, work, config path) -> argv list


def _with_config(model, out, work, config):
    return ["--config", str(config), "--model", model, "--out", str(out), "--work", str(work)]


STEPS = {
    "lenses": Step("jaxasr_interp.experiments.lenses", "lenses_{model}.json", "lenses.json", _with_config),
    "probes": Step("jaxasr_interp.experiments.probing", "probes_{model}.json", "probes.json",
                   lambda model, out, work, config: ["--config", str(config), "--model", model, "--out", str(out)]),
    "contextual-bias": Step("jaxasr_interp.experiments.contextual_bias_controls", "contextual_bias_{model}.json",
                            "contextual_bias.json", _with_config),
    "attention-window": Step("jaxasr_interp.experiments.attention_window", "attention_window_{model}.json", None,
                             lambda model, out, work, config: ["--model", model, "--out", str(out)]),
    "alignment-heads": Step("jaxasr_interp.experiments.alignment_heads", "alignment_heads_{model}.json", None,
                            lambda model, out, work, config: ["--model", model, "--out", str(out)]),
    "sae-study": Step("jaxasr_interp.sae.study", "sae_study_{model}.json", None,
                      lambda model, out, work, config: ["--model", model, "--out", str(out), "--work", str(work)]),
}


def _fingerprint(argv: list, config: Path | None) -> str:
    h = hashlib.sha256(json.dumps(argv).encode())
    if config is not None:
        h.update(config.read_bytes())
    return h.hexdigest()[:16]


def _plan(names, configs: Path) -> list[str]:
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    missing = [STEPS[n].config for n in names if STEPS[n].config and not (configs / STEPS[n].config).is_file()]
    if missing:
        raise FileNotFoundError(f"{configs} lacks {', '.join(missing)}: run from a clone of the repository "
                                f"(its configs/ folder holds the documented sizes) or pass --configs DIR")
    return list(names)


def run_all(model: str, out, *, only=None, configs="configs", log=print) -> dict:
    """Run (or resume) every step; returns the manifest written to ``out/all.json``."""
    out, configs = Path(out), Path(configs)
    names = _plan(only or list(STEPS), configs)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "all.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"model": model, "steps": {}}
    if manifest.get("model") != model:
        raise ValueError(f"{out} holds the reproduction of {manifest.get('model')}; use another folder for {model}")
    tag = Path(model).name
    for name in names:
        step = STEPS[name]
        config = configs / step.config if step.config else None
        argv = step.argv(model, out, out / "work" / name, config)
        key, result = _fingerprint(argv, config), out / step.result.format(model=tag)
        done = manifest["steps"].get(name, {})
        if done.get("fingerprint") == key and result.is_file():
            log(f"[{name}] done earlier ({done['wall_s']:.0f} s): {result}")
            continue
        log(f"[{name}] python -m {step.module} {' '.join(argv)}")
        wall, cpu = time.perf_counter(), time.process_time()
        importlib.import_module(step.module).main(argv)
        manifest["steps"][name] = {"fingerprint": key, "argv": argv, "result": str(result),
                                   "wall_s": round(time.perf_counter() - wall, 1),
                                   "cpu_s": round(time.process_time() - cpu, 1)}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")  # after each step: resumable
    return manifest
