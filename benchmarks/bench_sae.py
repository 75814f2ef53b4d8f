"""SAE training throughput: every SAE at once in one vmapped JAX program against the same TopK
SAEs trained one after another with a PyTorch loop, on the same batches and thread count.

Default: tiny.en's width (d = 384), 4 layers x expansion factors 8 and 16 (d_sae 3072 and
6144), k = 32, batch 4096, 150 steps. The activations are synthetic with planted sparse
features (``jaxasr_interp.sae.synthetic``), or a real store's first 4 layers with ``--store``.

Both sides run the same algorithm from the same initial weights: inputs scaled to mean norm
sqrt(d), b_dec at the geometric median of the first batch, normalised MSE, AuxK (1/32, k_aux =
d/2) on latents dead for ``--dead-after`` rows, the decoder gradient's radial part projected
out, Adam (0.9, 0.999, 1e-8) with the same warm-up/decay schedule, unit decoder rows after each
step. The PyTorch loop is the usual dense one (SAELens' TopK: scatter the top-k into a dense
``[B, d_sae]`` matrix, dense decoder product); JAX uses :mod:`jaxasr_interp.sae.train` (sparse
decoder forward, one dispatch per step for all 8 SAEs). Compilation and warm-up are excluded
(timed separately); throughput is activation rows a second summed over the SAEs. Quality:
FVU on held-out rows, the goal "within 2%" being ``|FVU_jax / FVU_torch - 1| <= 0.02`` per SAE.

Prints device, dtype, both throughputs, the ratio and the FVUs; writes
``benchmarks/results/bench_sae_cpu.json`` (``--out`` to change).

    python benchmarks/bench_sae.py [--threads 2] [--steps 150] [--store DIR]
    python benchmarks/bench_sae.py --smoke        # a tiny run that checks the script works
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--d", type=int, default=384)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--expansions", default="8,16")
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--rows", type=int, default=65536, help="training rows per layer (cycled)")
    p.add_argument("--eval-rows", type=int, default=16384)
    p.add_argument("--dead-after", type=int, default=200_000)
    p.add_argument("--store", help="an activation store to read instead of synthetic data")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check that the script runs")
    p.add_argument("--out", default="benchmarks/results/bench_sae_cpu.json")
    args = p.parse_args()
    if args.smoke:
        args.d, args.expansions, args.k, args.batch, args.steps, args.rows, args.eval_rows = 48, "2,4", 4, 256, 6, 2048, 1024
        args.dead_after, args.out = 512, args.out.replace(".json", "_smoke.json")
    return args


ARGS = parse()
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: ARGS.threads])  # both sides: same cores
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=true "
                           f"intra_op_parallelism_threads={ARGS.threads}").strip()

import jax  # noqa: E402  (after the thread settings)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from jaxasr_interp.sae import model as M  # noqa: E402
from jaxasr_interp.sae.metrics import evaluate  # noqa: E402
from jaxasr_interp.sae.synthetic import planted_activations  # noqa: E402
from jaxasr_interp.sae.train import _init_member, _layer_stats, schedule, train_saes  # noqa: E402

torch.set_num_threads(ARGS.threads)


def load_data():
    """``(train [L, rows, d], held-out [L, eval_rows, d])`` float32."""
    n = ARGS.rows + ARGS.eval_rows
    if ARGS.store:
        from jaxasr_interp.sae.store import ActivationStore
        store = ActivationStore(ARGS.store)
        x = store.sample(n, seed=0)[: ARGS.layers]
        ARGS.d = x.shape[-1]
    else:
        x, _ = planted_activations(n, ARGS.d, 4 * ARGS.d, ARGS.k / 2, layers=ARGS.layers, seed=0)
    return x[:, : ARGS.rows], x[:, ARGS.rows:]


def batch_list(train):
    starts = [(t * ARGS.batch) % (train.shape[1] - ARGS.batch + 1) for t in range(ARGS.steps)]
    return [np.ascontiguousarray(train[:, s:s + ARGS.batch]) for s in starts]


def torch_train(cfg, batch_rows, layer_stats, steps):
    """One TopK SAE, the usual dense PyTorch loop (module docstring)."""
    scale, b_dec = layer_stats
    init = jax.device_get(_init_member(cfg.seed, jnp.asarray(b_dec), d_sae=cfg.d_sae)["params"])
    p = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in init.items()}
    opt = torch.optim.Adam(list(p.values()), lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    since = torch.zeros(cfg.d_sae, dtype=torch.long)
    nmse = lambda x, y: ((y - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12)
    for t in range(steps):
        x = torch.from_numpy(batch_rows[t]) * float(scale)
        pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
        vals, idx = pre.topk(cfg.k, dim=-1, sorted=False)
        z = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        x_hat = z @ p["W_dec"] + p["b_dec"]
        loss = nmse(x, x_hat)
        dead = since >= ARGS.dead_after
        if dead.any():
            k_aux = cfg.k_aux
            a_vals, a_idx = torch.where(dead, pre, float("-inf")).topk(k_aux, dim=-1, sorted=False)
            e_hat = torch.zeros_like(pre).scatter(-1, a_idx, a_vals.relu()) @ p["W_dec"]
            loss = loss + cfg.aux_coeff * min(dead.sum().item() / k_aux, 1.0) * nmse((x - x_hat).detach(), e_hat)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            w, g = p["W_dec"], p["W_dec"].grad
            g -= (g * w).sum(-1, keepdim=True) * w
            for group in opt.param_groups:
                group["lr"] = cfg.learning_rate * schedule(t, ARGS.steps, 0.01, 0.2)
            opt.step()
            w /= w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            fired = torch.zeros(cfg.d_sae, dtype=torch.bool)
            fired[idx[vals > 0]] = True
            since = torch.where(fired, 0, since + x.shape[0])
    out = {k: v.detach().numpy().copy() for k, v in p.items()}
    return M.fold_scale(out, scale)


def main():
    train, held = load_data()
    batches = batch_list(train)
    expansions = [int(e) for e in ARGS.expansions.split(",")]
    configs = [M.SAEConfig(ARGS.d, e * ARGS.d, "topk", k=ARGS.k, layer=layer, seed=layer)
               for layer in range(ARGS.layers) for e in expansions]
    rows = ARGS.steps * ARGS.batch * len(configs)
    print(f"device {jax.devices()[0].platform} ({platform.processor() or platform.machine()}), float32, "
          f"{ARGS.threads} threads; {len(configs)} TopK SAEs (d={ARGS.d}, expansions {expansions}, k={ARGS.k}), "
          f"batch {ARGS.batch}, {ARGS.steps} steps", flush=True)

    kw = dict(layers=list(range(ARGS.layers)), dead_after=ARGS.dead_after, log_every=10 ** 9)
    start = time.perf_counter()
    train_saes(iter(batches[:2]), configs, steps=2, **kw)  # compiles the step
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    jax_saes = train_saes(iter(batches), configs, steps=ARGS.steps, **kw)
    jax_s = time.perf_counter() - start
    print(f"JAX: {jax_s:.1f} s ({rows / jax_s:,.0f} rows/s), first 2 steps with compilation {compile_s:.1f} s", flush=True)

    layer_stats = {r: tuple(np.asarray(v) for v in _layer_stats(jnp.asarray(batches[0][r]), init="geometric_median"))
                   for r in range(ARGS.layers)}
    torch_train(configs[0], [b[configs[0].layer] for b in batches[:2]], layer_stats[0], 2)  # warm-up
    start, torch_params = time.perf_counter(), []
    for cfg in configs:
        torch_params.append(torch_train(cfg, [b[cfg.layer] for b in batches], layer_stats[cfg.layer], ARGS.steps))
    torch_s = time.perf_counter() - start
    print(f"PyTorch: {torch_s:.1f} s ({rows / torch_s:,.0f} rows/s)", flush=True)

    held_batches = [held[:, s:s + 4096] for s in range(0, held.shape[1], 4096)]
    fvu_jax = [q["fvu"] for q in evaluate(jax_saes, held_batches)]
    fvu_torch = [q["fvu"] for q in evaluate([(p, c) for p, c in zip(torch_params, configs)], held_batches)]
    rel = [abs(a / b - 1) for a, b in zip(fvu_jax, fvu_torch)]
    result = dict(device=jax.devices()[0].platform, processor=platform.processor() or platform.machine(),
                  dtype="float32", threads=ARGS.threads, n_saes=len(configs), d=ARGS.d, expansions=expansions,
                  k=ARGS.k, batch=ARGS.batch, steps=ARGS.steps, data=ARGS.store or "synthetic planted",
                  jax_s=round(jax_s, 2), jax_compile_s=round(compile_s, 2), torch_s=round(torch_s, 2),
                  jax_rows_per_s=round(rows / jax_s), torch_rows_per_s=round(rows / torch_s),
                  ratio=round(torch_s / jax_s, 2), fvu_jax=[round(v, 4) for v in fvu_jax],
                  fvu_torch=[round(v, 4) for v in fvu_torch], max_fvu_rel_diff=round(max(rel), 4),
                  goal_met=bool(torch_s / jax_s >= 3 and max(rel) <= 0.02))
    print(f"ratio {result['ratio']}x (goal >= 3x); FVU JAX {result['fvu_jax']} vs PyTorch {result['fvu_torch']}, "
          f"largest relative difference {100 * max(rel):.2f}% (goal <= 2%)")
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ARGS.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {ARGS.out}")


if __name__ == "__main__":
    main()
