"""Run the two patching experiments (repetition hallucinations, contextual bias) on the bundled
models and write what the README reports.

    python scripts/patching_experiments.py [--models tiny.en,base] [--only repetition|contextual-bias]
                                           [--out runs/patching] [--dtype float32] [--precision highest]

Per model and experiment: the full report (JSON, CSV, plots) under ``OUT/<model>/<experiment>``,
small copies of the plots as ``docs/figures/patching_<experiment>_<model>*.png``, and all
summaries in ``notes/patching_results.json`` (merged with what earlier runs wrote). Sizes are
chosen so that each experiment takes a few minutes on a 2-core CPU; they are in SIZES and are
written into the summaries (with the dtype and precision).

Resumable: each experiment checkpoints every item in ``OUT/<model>/<experiment>/checkpoints``
(:mod:`jaxasr_interp.experiments.stages`); rerun the same command after an interruption and it
continues where it stopped, with identical results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_LAYER_FAMILIES = ("encoder.block", "encoder.attn", "encoder.mlp", "decoder.block", "decoder.self_attn",
                   "decoder.cross_attn", "decoder.mlp")
SIZES = {  # all four runs took ~80 min together on a quiet 2-core CPU (seconds in each summary)
    "tiny.en": dict(repetition=dict(alphas=(0.25, 0.5, 0.75, 1.0), max_items=6, max_new_tokens=96, chunk=14),
                    contextual=dict(families=_LAYER_FAMILIES + ("encoder.head",), alphas=(0.25, 0.5, 1.0),
                                    max_items=15, max_new_tokens=32)),
    "base": dict(repetition=dict(alphas=(0.5, 1.0), max_items=9, max_new_tokens=96, chunk=18),
                 contextual=dict(families=_LAYER_FAMILIES, alphas=(0.5, 1.0), max_items=24, max_new_tokens=32)),
}


def _figures(paths, experiment: str, model: str):
    fig_dir = ROOT / "docs" / "figures"
    for path in paths:
        suffix = Path(path).stem.split("_")[-1]
        shutil.copy(path, fig_dir / f"patching_{experiment}_{model}_{suffix}.png")


def main(argv=None) -> int:
    import jaxasr_interp as jai
    from jaxasr_interp.experiments import contextual_bias as C
    from jaxasr_interp.data.minimal_pairs import generate
    from jaxasr_interp.experiments import repetition as R

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--only", choices=("repetition", "contextual-bias"), default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "patching"))
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    parser.add_argument("--precision", choices=("highest", "high", "default"), default="highest",
                        help="matmul precision (GPU/TPU)")
    args = parser.parse_args(argv)
    numerics = dict(dtype=args.dtype, precision=args.precision)
    results_file = ROOT / "notes" / "patching_results.json"
    results = {}
    for name in args.models.split(","):
        model = jai.load(name)
        sizes = SIZES.get(name, SIZES["base"])
        if args.only in (None, "repetition"):
            start = time.perf_counter()
            out = Path(args.out) / name / "repetition"
            result = R.run(model, **sizes["repetition"], work_dir=out / "checkpoints", **numerics)
            summary = R.write_report(result, out)
            summary.update(seconds=round(time.perf_counter() - start, 1), sizes={**sizes["repetition"], **numerics})
            _figures(summary["plots"], "repetition", name)
            results[f"repetition/{name}"] = summary
            print(R.format_summary(summary), f"[{summary['seconds']} s]", flush=True)
        if args.only in (None, "contextual-bias"):
            start = time.perf_counter()
            out = Path(args.out) / name / "contextual_bias"
            kw = dict(sizes["contextual"])
            stimuli = generate(kw.pop("n_sentences", None))
            summary = C.write_report(C.run(model, out, stimuli=stimuli, **kw, **numerics), out)
            summary.update(seconds=round(time.perf_counter() - start, 1), sizes={**sizes["contextual"], **numerics})
            _figures(summary["plots"], "contextual_bias", name)
            results[f"contextual-bias/{name}"] = summary
            print(C.format_summary(summary), f"[{summary['seconds']} s]", flush=True)
        # merged with what other (possibly concurrent) runs wrote in the meantime
        merged = json.loads(results_file.read_text()) if results_file.is_file() else {}
        results_file.write_text(json.dumps({**merged, **results}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
