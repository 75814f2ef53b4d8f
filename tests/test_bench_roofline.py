"""benchmarks/bench_roofline.py at small sizes: its counts (FLOPs, bytes) and its trace profile."""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxasr_interp as jai

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_roofline  # noqa: E402


def test_matmul_only_program_does_the_encoder_flops():
    dims = dataclasses.replace(jai.preset("tiny.en"), n_audio_layer=1)
    weights = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                     bench_roofline.matmul_weights(dims))
    mels = jax.ShapeDtypeStruct((2, dims.n_mels, dims.n_samples_frames), jnp.float32)
    compiled = jax.jit(bench_roofline.matmul_only(dims)).lower(mels, weights).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    # the convolutions' zero padding is not counted by XLA: a 1e-5 difference
    assert abs(cost["flops"] / (2 * bench_roofline.encoder_flops(dims)) - 1) < 1e-4
    ops = {line.split("(")[0].split()[-1] for line in compiled.as_text().splitlines()
           if " = " in line and "ENTRY" not in line}
    assert not ops & {"exponential", "add", "divide", "reduce"}  # nothing but products and layout


def test_step_bytes_tiny():
    dims = jai.preset("tiny.en")
    d, n_layer, vocab = dims.n_text_state, dims.n_text_layer, dims.n_vocab
    # per layer: self q/k/v/out (4 d^2 + 3 d), cross q/out (2 d^2 + 2 d), MLP (8 d^2 + 5 d), 3 layer norms
    per_layer = 14 * d * d + 10 * d + 6 * d
    params = n_layer * per_layer + vocab * d + d + 2 * d  # tied embedding, one position, ln
    got = bench_roofline.step_bytes(dims, batch=2, position=9)
    assert got["params"] == 4 * params
    assert got["self_kv_to_position"] == 4 * 2 * n_layer * d * 2 * 10
    assert got["cross_kv"] == 4 * 2 * n_layer * dims.n_audio_ctx * d * 2
    assert got["must_read"] < got["as_allocated"]


def test_trace_ops_names_the_ops():
    f = jax.jit(lambda a: jnp.exp(a @ a))
    x = jnp.asarray(np.ones((64, 64), np.float32))
    hlo = f.lower(x).compile().as_text()
    # every op, not the top 12: in a worker process that ran other tests, other threads' events
    # (compilation, transfers) can outlast a 64x64 matmul in the trace
    rows = bench_roofline.trace_ops(lambda: f(x).block_until_ready(), hlo, calls=2, top=None)
    assert rows and all(r["s_per_call"] >= 0 for r in rows)
    assert any("dot" in r["kinds"] or "dot" in r["op"] for r in rows)
