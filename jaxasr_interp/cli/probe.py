"""``jaxasr-interp probe`` (probe one label of a dataset directory) and the probing
experiments ``jaxasr-interp experiment probe-gender|probe-accent|probe-noise|probe-speech|
probe-hallucination`` (build the data, extract features, train, report). Both take ``--dtype``
and ``--precision`` (:mod:`.options`): the model's dtype and precision while extracting
features (the probes are trained in float32)."""

from __future__ import annotations

import json

from jaxasr_interp.cli.options import add_model, add_numerics, add_out, floats, numerics


def _probe_kw(args) -> dict:
    if args.folds < 2:
        raise ValueError(f"--folds must be at least 2, got {args.folds}")
    return dict(folds=args.folds, seeds=tuple(int(s) for s in floats(args.seeds)), l2=floats(args.l2),
                chunk_size=args.chunk_size)


def _add_probe_options(p):
    add_model(p)
    p.add_argument("--folds", type=int, default=5, help="stratified cross-validation folds")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (fold splits, controls)")
    p.add_argument("--l2", default="0.001,0.01,0.1", help="comma-separated L2 strengths swept")
    p.add_argument("--chunk-size", type=int, default=8, help="utterances per feature chunk")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_numerics(p)


def _print(summary, as_json):
    from jaxasr_interp.experiments.probing import format_summary
    print(json.dumps(summary, indent=2) if as_json else format_summary(summary))
    if not as_json:
        print(f"wrote {summary['csv']} and {summary['plot']}")


def _probe(args) -> int:
    from jaxasr_interp.experiments.probing import probe_dataset
    summary = probe_dataset(args.data, args.target, args.out, model=args.model,
                            features_dir=args.features, **_probe_kw(args), **numerics(args))
    _print(summary, args.json)
    return 0


def _experiment(args) -> int:
    from jaxasr_interp.experiments.probing import run_experiment
    if args.n is not None and args.n < args.folds:
        raise ValueError(f"--n must be at least the {args.folds} items per class that {args.folds}-fold "
                         f"cross-validation needs (--folds), got {args.n}")
    summary = run_experiment(args.experiment, args.out, model=args.model, n_per_class=args.n,
                             seed=args.seed, pool=args.pool, **_probe_kw(args), **numerics(args))
    _print(summary, args.json)
    return 0


def register(sub):
    p = sub.add_parser("probe", help="linear probes of every layer for one label of a dataset",
                       description="Extract encoder (mean over audio frames) and decoder (end-of-text) "
                                   "features of every layer (resumable, in OUT/features), train "
                                   "cross-validated L2 logistic-regression probes with a shuffled-label "
                                   "control, write OUT/probe_TARGET.csv and .png.")
    p.add_argument("--data", required=True, help="dataset directory (format: jaxasr_interp.data)")
    p.add_argument("--target", required=True, help="label column to probe")
    add_out(p)
    p.add_argument("--features", default=None, help="features directory (default OUT/features)")
    _add_probe_options(p)
    p.set_defaults(run=_probe)


def register_experiments(exp_sub):
    from jaxasr_interp.experiments.probing import EXPERIMENTS
    for name, spec in EXPERIMENTS.items():
        paper = spec["paper"].replace("%", "%%")  # help strings are %-formatted; descriptions are not
        p = exp_sub.add_parser(name, help=f"probing: {spec['target']} (paper: {paper})",
                               description=f"Build the {spec['builder']} dataset (OUT/data), extract features, "
                                           f"probe '{spec['target']}' at every layer. Paper: {spec['paper']}.")
        add_out(p)
        p.add_argument("--n", type=int, default=None,
                       help=f"items per class (default {spec['n']}; for hallucination: k)")
        p.add_argument("--pool", type=int, default=None, help="hallucination only: utterances transcribed (default 8 k)")
        p.add_argument("--seed", type=int, default=0, help="dataset seed")
        _add_probe_options(p)
        p.set_defaults(run=_experiment, experiment=name)
