"""Probe sweeps: one jitted JAX program against a scikit-learn ``LogisticRegression`` loop.

Two scales, one run, same machine, the same probes on both sides (standardised features,
L2 strength ``l2`` = scikit-learn ``C = 1 / (l2 * n_train)``, stratified 5-fold, one seed,
no shuffled control on either side):

* ``tiny``: tiny.en's real features from an extraction (``--features DIR`` written by
  ``jaxasr_interp.probes.features``; targets are columns of the dataset's labels table ``--data``),
  every encoder and decoder layer x the targets x 5 folds. scikit-learn runs every fit.
* ``large``: large-v3 scale, synthetic features with a planted signal: 64 layers (32 encoder +
  32 decoder), d = 1280, n = 2000, 4 binary targets, 5 folds (1280 fits). scikit-learn is timed
  on a random sample of (layer, target) pairs, all 5 folds each, and its time is scaled to
  the 1280 fits; the accuracy difference is over the sampled pairs.

JAX time is wall time of the first call in this process, compilation included (the results
come back as numpy arrays, so the work is finished); a second, warm call is reported too.
Prints device, dtype, both times, the ratio and the largest accuracy difference, and writes
``benchmarks/results/bench_probes_cpu.json``.

    python benchmarks/bench_probes.py [--features DIR --data DIR --targets a,b,c,d] [--sample 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from jaxasr_interp.probes.sweep import planted_features, probe_sweep, stratified_folds

K, L2 = 5, 1e-2


def sklearn_pooled_accuracy(x, y, folds) -> tuple[float, float]:
    """Pooled 5-fold accuracy of scikit-learn on one (layer, target), and the seconds it took."""
    start, correct = time.perf_counter(), 0
    for k in range(K):
        train = folds != k
        scaler = StandardScaler().fit(x[train])
        model = LogisticRegression(C=1.0 / (L2 * train.sum()), max_iter=1000)
        model.fit(scaler.transform(x[train]), y[train])
        correct += int((model.predict(scaler.transform(x[~train])) == y[~train]).sum())
    return correct / len(y), time.perf_counter() - start


def run_scale(name, features, labels, pairs, total_pairs) -> dict:
    start = time.perf_counter()
    res = probe_sweep(features, labels, k=K, seeds=(0,), l2=(L2,), control=False)
    jax_cold = time.perf_counter() - start
    start = time.perf_counter()
    probe_sweep(features, labels, k=K, seeds=(0,), l2=(L2,), control=False)
    jax_warm = time.perf_counter() - start
    sk_time, diffs = 0.0, []
    for layer, t in pairs:
        acc, secs = sklearn_pooled_accuracy(features[layer], labels[t], stratified_folds(labels[t], K, 0))
        sk_time += secs
        diffs.append(abs(acc - float(res.accuracy[layer, t, 0, 0])))
    sk_total = sk_time * total_pairs / len(pairs)
    out = dict(scale=name, layers=int(features.shape[0]), n=int(features.shape[1]),
               d=int(features.shape[2]), targets=int(labels.shape[0]), folds=K, fits=total_pairs * K,
               sklearn_fits_timed=len(pairs) * K, sklearn_s=round(sk_total, 2),
               sklearn_scaled=len(pairs) < total_pairs, jax_s_with_compile=round(jax_cold, 2),
               jax_s_warm=round(jax_warm, 2), ratio_with_compile=round(sk_total / jax_cold, 2),
               ratio_warm=round(sk_total / jax_warm, 2), max_accuracy_diff=round(max(diffs), 4),
               best_accuracy=round(float(res.accuracy.max()), 4))
    print(f"[{name}] {out['layers']} layers x n={out['n']} x d={out['d']} x {out['targets']} targets "
          f"x {K} folds: JAX {jax_cold:.1f} s with compilation ({jax_warm:.1f} s warm), "
          f"scikit-learn {sk_total:.1f} s" + (f" (scaled from {len(pairs) * K} fits)" if out["sklearn_scaled"] else "")
          + f" -> {out['ratio_with_compile']:.1f}x with compilation, {out['ratio_warm']:.1f}x warm; "
          f"largest accuracy difference {100 * max(diffs):.2f} points")
    return out


def tiny_scale(features_dir, data_dir, targets):
    from jaxasr_interp.data import read_dataset
    from jaxasr_interp.probes.features import load_features, probe_matrix

    feats = load_features(features_dir)
    table = read_dataset(data_dir)
    x, _ = probe_matrix(feats)
    labels = np.stack([table.encoded(t)[0] for t in targets])
    pairs = [(layer, t) for layer in range(x.shape[0]) for t in range(len(targets))]
    return run_scale("tiny.en real features", x, labels, pairs, len(pairs))


def large_scale(sample, seed=0):
    rng = np.random.default_rng(seed)
    n, layers, d, targets = 2000, 64, 1280, 4
    labels = np.stack([rng.permutation(np.arange(n) % 2) for _ in range(targets)])
    x = planted_features(labels, layers, d, layers=[24, 54], strength=0.6, seed=seed)
    all_pairs = [(layer, t) for layer in range(layers) for t in range(targets)]
    picks = rng.choice(len(all_pairs), size=sample, replace=False)
    pairs = sorted({all_pairs[i] for i in picks} | {(24, 0), (54, 1)})  # include planted layers
    return run_scale("large-v3 scale, synthetic", x, labels, pairs, len(all_pairs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", help="tiny.en features directory (jaxasr_interp.probes.features)")
    parser.add_argument("--data", help="the dataset directory the features came from")
    parser.add_argument("--targets", default="", help="comma-separated label columns")
    parser.add_argument("--sample", type=int, default=8, help="(layer, target) pairs scikit-learn runs at large scale")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_probes_cpu.json"))
    args = parser.parse_args()
    info = dict(device=str(jax.devices()[0]), dtype="float32", jax=jax.__version__,
                machine=platform.processor() or platform.machine(), l2=L2, optimizer="L-BFGS (memory 8, exact line search in logit space), tol 1e-4 on the largest gradient entry (scikit-learn: lbfgs, tol 1e-4)")
    print(f"device {info['device']}, float32, jax {jax.__version__}")
    results = []
    if args.features:
        results.append(tiny_scale(args.features, args.data, [t for t in args.targets.split(",") if t]))
    if not args.skip_large:
        results.append(large_scale(args.sample))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(dict(info, results=results), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
