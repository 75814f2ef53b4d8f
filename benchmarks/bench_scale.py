"""Scale figures: compile time by model size, encoder FLOP/s against plain matmul, and the peak
memory of streamed feature capture.

* ``compile``: the teacher-forced forward (encoder + decoder) lowered and compiled on abstract
  shapes (``jax.ShapeDtypeStruct``, no weights) for tiny, base, large-v3 and large-v3-turbo
  dims; the ratio to tiny (goal <= 3x: blocks run under ``lax.scan``, so depth does not
  multiply the program).
* ``flops``: the encoder of tiny.en / base (real weights, batch of real clips) in FLOP/s
  (FLOPs counted from the shapes), against ``jnp.matmul`` of the encoder's MLP shape in the same run
  (goal >= 50%).
* ``memory``: ``extract_features`` over N clips (default 1000: the bundled clips cycled) in a
  fresh subprocess; its peak resident memory (``ru_maxrss``) (goal < 4 GB for tiny.en).

    python benchmarks/bench_scale.py [--parts compile,flops,memory] [--clips 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxasr_interp as jai
from jaxasr_interp.whisper.config import preset
from jaxasr_interp.weights.layout import param_shapes
from bench_forward import best_time  # benchmarks/ is on sys.path when run as a script


def abstract_params(dims):
    def leaf(x):
        return isinstance(x, tuple) and all(isinstance(n, int) for n in x)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), param_shapes(dims),
                                  is_leaf=leaf)


def compile_seconds(dims, n_tokens: int = 32) -> float:
    def fwd(params, mel, tokens):
        return jai.forward(params, mel, tokens, dims=dims)[0]

    args = (abstract_params(dims), jax.ShapeDtypeStruct((dims.n_mels, dims.n_samples_frames), jnp.float32),
            jax.ShapeDtypeStruct((n_tokens,), jnp.int32))
    start = time.perf_counter()
    jax.jit(fwd).lower(*args).compile()
    return time.perf_counter() - start


def part_compile() -> dict:
    out = {name: compile_seconds(preset(name)) for name in ("tiny", "base", "large-v3", "large-v3-turbo")}
    return {"compile_s": out, "ratio_to_tiny": {k: v / out["tiny"] for k, v in out.items()}}


def encoder_flops(dims) -> float:
    """Multiply-adds x 2 of one encoder pass, counted from the shapes (XLA's cost analysis
    counts a ``lax.scan`` body once, not once per layer)."""
    s, d, frames = dims.n_audio_ctx, dims.n_audio_state, dims.n_samples_frames
    convs = frames * dims.n_mels * 3 * d + s * d * 3 * d
    per_layer = s * 12 * d * d + 2 * s * s * d  # q, k, v, out (4 d^2), MLP (8 d^2); QK^T and AV
    return 2.0 * (convs + dims.n_audio_layer * per_layer)


def part_flops(model_name: str, batch: int) -> dict:
    model = jai.load(model_name)
    dims = model.dims
    names = list(jai.sample_transcripts())
    mels = jnp.stack([jai.log_mel(jai.load_audio(jai.sample_path(names[i % len(names)])), n_mels=dims.n_mels)
                      for i in range(batch)])
    encoder = jax.jit(lambda p, m: jai.encode_batch(p, m, dims=dims))
    flops = batch * encoder_flops(dims)
    t_enc = best_time(lambda: encoder(model.params, mels).block_until_ready())
    # the encoder's dominant product: its MLP input, [batch * S, D] x [D, 4D]
    a = jnp.ones((batch * dims.n_audio_ctx, dims.n_audio_state), jnp.float32)
    b = jnp.ones((dims.n_audio_state, 4 * dims.n_audio_state), jnp.float32)
    mm = jax.jit(jnp.matmul)
    t_mm = best_time(lambda: mm(a, b).block_until_ready())
    mm_flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    enc_rate, mm_rate = flops / t_enc, mm_flops / t_mm
    return {"model": model_name, "batch": batch, "encoder_gflop": flops / 1e9, "encoder_s": t_enc,
            "encoder_gflops_per_s": enc_rate / 1e9, "matmul_gflops_per_s": mm_rate / 1e9,
            "encoder_fraction_of_matmul": enc_rate / mm_rate}


MEMORY_CHILD = """
import resource, sys, tempfile, time
import jaxasr_interp as jai
n, model_name = int(sys.argv[1]), sys.argv[2]
model = jai.load(model_name)
names = list(jai.sample_transcripts())
audio = [str(jai.sample_path(names[i % len(names)])) for i in range(n)]
start = time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    jai.extract_features(model, audio, out, chunk_size=8, max_new_tokens=64)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def part_memory(model_name: str, clips: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(clips), model_name],
                          capture_output=True, text=True, check=True)
    seconds, kib = proc.stdout.split()[-2:]
    return {"model": model_name, "clips": clips, "seconds": float(seconds),
            "peak_rss_gb": int(kib) / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="compile,flops,memory")
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_scale_cpu.json"))
    args = parser.parse_args()
    result = {"device": str(jax.devices()[0]), "cpu": platform.processor() or platform.machine(),
              "jax": jax.__version__, "dtype": "float32"}
    parts = args.parts.split(",")
    if "compile" in parts:
        result["compile"] = part_compile()
    if "flops" in parts:
        result["flops"] = [part_flops(m, args.batch) for m in ("tiny.en", "base")]
    if "memory" in parts:
        result["memory"] = part_memory("tiny.en", args.clips)
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**previous, **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
