"""The experiments beyond the paper (docs/beyond_paper.md) as ``jaxasr-interp experiment NAME``:

- ``attention-window``: encoder self-attention restricted to +-k frames, WER per k and layer
  (:mod:`jaxasr_interp.experiments.attention_window`);
- ``alignment-heads``: decoder cross-attention heads ranked by how monotonically they move
  through the audio (:mod:`jaxasr_interp.experiments.alignment_heads`);
- ``all``: every experiment of the docs at its documented sizes, resumable
  (:mod:`jaxasr_interp.experiments.all`).

Each writes ``OUT/<experiment>_<model>.json`` and prints its tables. The model is loaded in
``--dtype`` (the experiments compute in the parameters' dtype) and its matmuls run at
``--precision``. ``all`` reproduces the documented float32 numbers, so it takes neither.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from jaxasr_interp.cli.options import add_model, add_numerics, add_out

EXPERIMENTS = {
    "attention-window": ("attention_window", "encoder self-attention kept within +-k frames "
                         "(k in 10, 20, 50, 75, 150, all), per layer and on all layers: WER per k "
                         "with bootstrap intervals and a random-key control"),
    "alignment-heads": ("alignment_heads", "rank every decoder cross-attention head by the "
                        "monotonicity of its attention through the audio (the property word "
                        "timestamps use); compares with openai's published alignment heads"),
}
SYNTH_DEFAULTS = {"attention-window": 0, "alignment-heads": 24}


def _run(args) -> int:
    from jaxasr_interp.whisper.api import load

    module = importlib.import_module(f"jaxasr_interp.experiments.{EXPERIMENTS[args.experiment][0]}")
    if args.synth < 0:
        raise ValueError(f"--synth must be at least 0, got {args.synth}")
    clips = module.speech_clips(args.synth)
    model = load(args.model, dtype=args.dtype)
    result = module.run(model, clips, name=Path(args.model).name, out=args.out, precision=args.precision)
    print(module.markdown(result))
    print(f"results: {Path(args.out) / (EXPERIMENTS[args.experiment][0] + '_' + Path(args.model).name + '.json')}")
    return 0


def _run_all(args) -> int:
    from jaxasr_interp.experiments.all import run_all

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    manifest = run_all(args.model, args.out, only=only, configs=args.configs)
    for name, step in manifest["steps"].items():
        print(f"{name}: {step['wall_s']:.0f} s wall, {step['cpu_s']:.0f} s CPU -> {step['result']}")
    return 0


def _register_all(exp_sub) -> None:
    from jaxasr_interp.experiments.all import STEPS

    text = "every experiment of the docs at its documented sizes (configs/), resumable: rerun to continue"
    p = exp_sub.add_parser("all", help=text, description=text)
    add_model(p, "model name or checkpoint path")
    add_out(p, "folder for the results JSONs, checkpoints and all.json")
    p.add_argument("--only", default=None, help=f"comma-separated steps of: {', '.join(STEPS)} (default: all)")
    p.add_argument("--configs", default="configs", help="folder of the checked-in configs")
    p.set_defaults(run=_run_all)


def register_experiments(exp_sub) -> None:
    _register_all(exp_sub)
    for name, (_, help_text) in EXPERIMENTS.items():
        p = exp_sub.add_parser(name, help=help_text, description=help_text)
        add_model(p, "model name or checkpoint path")
        add_out(p, "folder for the results JSON", default="results")
        p.add_argument("--synth", type=int, default=SYNTH_DEFAULTS[name],
                       help="synthesized sentences added to the real clips")
        add_numerics(p)
        p.set_defaults(run=_run)
