"""Roofline on CPU: the encoder against plain matmuls, a cached decoding step against memory
bandwidth, both measured against this machine in the same run (float32, precision "highest").

1. ``encoder``: the library's jitted encoder (``encode_batch``; real clips, ``--batch``) against
   one jitted program doing exactly the encoder's matmuls, same shapes and count, vmapped over
   the batch like the encoder, and nothing else: conv1/conv2 as the same convolutions
   (``conv_general_dilated``, no bias or GELU), q/k/v/out projections, the per-head score and
   value products, MLP fc1/fc2, layers unrolled. Activations pass between the products by
   reshapes only (free; the values mean nothing, weights scaled so they stay O(1)). FLOPs are
   counted from the shapes (``bench_scale.encoder_flops``). The old baseline (one ``jnp.matmul``
   of the MLP shape, ``bench_scale``) is kept for continuity. Goal: >= 80% of matmul-only FLOP/s.
2. Where the encoder's other time goes, measured two ways: ``trace_profile``, XLA's own per-op
   times from a ``jax.profiler`` trace of the encoder (each op with what it fuses and its JAX
   source, share of the encoder's time); ``profile``, each non-matmul op class jitted alone on
   the encoder's shapes times its count per pass (fresh outputs each call: upper bounds), and
   ``lax.scan`` over the layers (the matmul-only program scanned minus unrolled).
3. ``decode``: one cached greedy step of ``greedy_decode`` (what ``transcribe`` runs), end of
   text suppressed: the marginal time per token around position n_prompt + n_text_ctx // 4 (the
   middle of a default-length decode), with a trace profile of the loop's per-step ops; and the
   same step jitted alone (``decode`` with a KV cache, vmapped, bias added before the argmax,
   as in ``greedy_decode``; cache donated). Bytes a step must read: the decoder parameters it
   touches (the tied token embedding included; cross-attention key/value kernels and all but
   one positional row excluded), the self-attention cache up to the position (as allocated,
   ``n_text_ctx`` rows, also reported: the library reads that) and the cross-attention K/V.
   Bandwidth: ``x + 1`` in place over 512 MiB float32 (bytes read / s; read + write and a
   read-only ``sum`` also reported). Bound = bytes / read bandwidth; fraction = bound / step
   time in the loop (goal >= 70%). Also measured: the step without the vocabulary projection
   (``readout=``), that projection alone, an empty jitted call with the step's arguments.

    python benchmarks/bench_roofline.py [--batch 4] [--repeats 5] [--models tiny.en,base]
        [--out benchmarks/results/bench_roofline_cpu.json]
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxasr_interp as jai
from jaxasr_interp.core import layers as L
from jaxasr_interp.core.engine import layer_list
from jaxasr_interp.whisper.decoding import greedy_decode, init_cache, logit_bias
from jaxasr_interp.whisper.model import decode
from jaxasr_interp.weights.layout import param_shapes
from bench_scale import encoder_flops  # benchmarks/ is on sys.path when run as a script

GOALS = {"encoder_fraction_of_matmul": 0.80, "decode_fraction_of_bandwidth_bound": 0.70}
REPEATS = 5


def timed(fn, repeats: int | None = None) -> float:
    """Median wall time of ``fn()`` (which blocks on its result) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats or REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_jit(fn, *args):
    f = jax.jit(fn)
    return timed(lambda: jax.block_until_ready(f(*args)))


def trace_ops(fn, hlo: str, calls: int = 2, top: int = 12) -> list:
    """Per-op time of ``fn()`` from a ``jax.profiler`` trace: XLA CPU records one event per
    executed op (thunk), named as in the compiled HLO ``hlo``; summed per name, per call.
    Each row: the op, its HLO kinds (what a fusion holds), its source (JAX op_name), seconds
    per call and events per call (an op in a loop body runs once per iteration)."""
    meta = dict(re.findall(r'%([\w.\-]+) = [^\n]*?metadata=\{op_name="([^"]*)"', hlo))
    calls_of = dict(re.findall(r"%([\w.\-]+) = [^\n]*?calls=%([\w.\-]+)", hlo))

    def kinds(name):
        body = re.search(r"\n%" + re.escape(calls_of.get(name, "?")) + r" .*?\n}", hlo, re.S)
        found = re.findall(r"= \S+ ([a-z][\w-]*)\(", body.group(0)) if body else []
        return sorted(set(found) - {"parameter", "constant", "bitcast", "broadcast"})
    fn()
    total, count = collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for _ in range(calls):
                fn()
        data = jax.profiler.ProfileData.from_file(glob.glob(tmp + "/**/*.xplane.pb", recursive=True)[0])
    for plane in data.planes:
        for line in plane.lines:
            for e in line.events if line.name != "python" else ():
                if not e.name.startswith(("end:", "Thread", "ThunkExecutor", "Slinky", "Pjit", "Parse")):
                    total[e.name] += e.duration_ns / 1e9 / calls
                    count[e.name] += 1 / calls
    return [{"op": n, "kinds": kinds(n), "source": meta.get(n, "?").split("/", 1)[-1], "s_per_call": t,
             "events_per_call": round(count[n], 2)} for n, t in total.most_common(top)]


def clip_mels(dims, batch):
    names = list(jai.sample_transcripts())
    return jnp.stack([jai.log_mel(jai.load_audio(jai.sample_path(names[i % len(names)])), n_mels=dims.n_mels)
                      for i in range(batch)])


def rand(shape, scale=1.0, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32) * scale)


# ---------------------------------------------------------------- 1. encoder against matmuls
def matmul_weights(dims):
    d, s, h, m = dims.n_audio_state, dims.n_audio_ctx, dims.n_audio_head, dims.n_mels
    layer = lambda i: {"q": rand((d, d), d ** -0.5, i), "k": rand((d, d), (d * d // h) ** -0.5, i + 1),
                       "v": rand((d, d), (d * s) ** -0.5, i + 2), "o": rand((d, d), d ** -0.5, i + 3),
                       "fc1": rand((d, 4 * d), d ** -0.5, i + 4), "fc2": rand((4 * d, d), (4 * d) ** -0.5, i + 5)}
    return {"conv1": rand((3, m, d), (3 * m) ** -0.5), "conv2": rand((3, d, d), (3 * d) ** -0.5, 1),
            "layers": [layer(10 * i) for i in range(dims.n_audio_layer)]}


def matmul_only(dims, scan: bool = False):
    """mels [B, n_mels, frames], weights -> the encoder's products alone (see the docstring)."""
    s, d, h = dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head

    def conv(x, w, stride):
        return jax.lax.conv_general_dilated(x[None], w, (stride,), ((1, 1),),
                                            dimension_numbers=("NWC", "WIO", "NWC"))[0]

    def layer(x, w):
        q, k, v = x @ w["q"], x @ w["k"], x @ w["v"]
        scores = jnp.einsum("hqd,hkd->hqk", q.reshape(h, s, -1), k.reshape(h, s, -1))
        z = jnp.einsum("hqk,hkd->hqd", scores, v.reshape(h, s, -1)).reshape(s, d)
        return ((z @ w["o"]) @ w["fc1"]) @ w["fc2"]

    def one(mel, w):
        x = conv(conv(mel.T, w["conv1"], 1), w["conv2"], 2)
        if scan:  # w["layers"] stacked [L, ...], as the encoder's are
            return jax.lax.scan(lambda x, w_l: (layer(x, w_l), None), x, w["layers"])[0]
        for w_l in w["layers"]:
            x = layer(x, w_l)
        return x

    def program(mels, w):
        with jax.default_matmul_precision("highest"):
            return jax.vmap(one, (0, None))(mels, w)
    return program


def part_encoder(model, batch: int) -> dict:
    dims = model.dims
    mels = clip_mels(dims, batch)
    flops = batch * encoder_flops(dims)
    t_enc = timed(lambda: jai.encode_batch(model.params, mels, dims=dims).block_until_ready())
    w = matmul_weights(dims)
    t_mm = run_jit(matmul_only(dims), mels, w)
    stacked = {**w, "layers": jax.tree_util.tree_map(lambda *a: jnp.stack(a), *w["layers"])}
    t_mm_scan = run_jit(matmul_only(dims, scan=True), mels, stacked)
    a = jnp.ones((batch * dims.n_audio_ctx, dims.n_audio_state), jnp.float32)
    b = jnp.ones((dims.n_audio_state, 4 * dims.n_audio_state), jnp.float32)
    t_mlp = run_jit(functools.partial(jnp.matmul, precision="highest"), a, b)
    mlp_rate = 2 * a.shape[0] * a.shape[1] * b.shape[1] / t_mlp
    out = {"batch": batch, "gflop": flops / 1e9, "encoder_s": t_enc, "matmul_only_s": t_mm,
           "encoder_gflops_per_s": flops / t_enc / 1e9, "matmul_only_gflops_per_s": flops / t_mm / 1e9,
           "fraction": t_mm / t_enc, "old_baseline_mlp_matmul_gflops_per_s": mlp_rate / 1e9,
           "old_baseline_fraction": flops / t_enc / mlp_rate,
           "conv": "same convolutions (conv_general_dilated), not im2col"}
    out["profile"] = profile_encoder(model, batch, t_enc, t_mm, t_mm_scan)
    hlo = jai.encode_batch.lower(model.params, mels, dims=dims).compile().as_text()
    rows = trace_ops(lambda: jai.encode_batch(model.params, mels, dims=dims).block_until_ready(), hlo)
    out["trace_profile"] = [{**r, "share_of_encoder": r["s_per_call"] / t_enc} for r in rows]
    return out


# ---------------------------------------------------------------- 2. encoder's non-matmul time
def profile_encoder(model, batch, t_enc, t_mm, t_mm_scan) -> dict:
    dims, p = model.dims, model.params["encoder"]
    s, d, h, n = dims.n_audio_ctx, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer
    blk = jax.tree_util.tree_map(lambda a: a[0], p["blocks"])
    x, x4, x2 = rand((batch, s, d)), rand((batch, s, 4 * d)), rand((batch, 2 * s, d))
    vm = lambda f: jax.vmap(f)
    ops = {  # name: (count per pass, function, args) -- the elementwise parts XLA fuses together
        "softmax [B,H,S,S] (scores in)": (n, vm(lambda a: jax.nn.softmax(a, axis=-1)), (rand((batch, h, s, s)),)),
        "mlp1 bias + exact GELU (erf) [B,S,4D]": (n, vm(lambda a: L.gelu(a + blk["mlp1"]["bias"])), (x4,)),
        "layer norm [B,S,D]": (2 * n + 1, vm(lambda a: L.layer_norm(a, blk["attn_ln"])), (x,)),
        "residual add + out/fc2 bias [B,S,D]": (2 * n, vm(lambda a, b: a + b + blk["mlp2"]["bias"]), (x, x)),
        "q/v bias, q scale, head-major transposes": (n, vm(lambda q, k, v, z: (
            L.head_major(L.split_heads((q + blk["attn"]["query"]["bias"]) * (d // h) ** -0.5, h)),
            L.head_major(L.split_heads(k, h)), L.head_major(L.split_heads(v + blk["attn"]["value"]["bias"], h)),
            L.head_major(z.reshape(h, s, -1)).reshape(s, d))), (x, x, x, x)),
        "stem: conv bias + GELU (both convs)": (1, vm(lambda a, b: (L.gelu(a + p["conv1"]["bias"]),
                                                                 L.gelu(b + p["conv2"]["bias"]))), (x2, x)),
        "positional add [B,S,D]": (1, vm(lambda a: a + p["positional_embedding"]["embedding"][:s]), (x,)),
    }
    rows = []
    for name, (count, fn, args) in ops.items():
        t = count * run_jit(fn, *args)
        rows.append({"op": name, "count": count, "s": t, "share_of_encoder": t / t_enc})
    scan = t_mm_scan - t_mm
    rows.append({"op": "lax.scan over layers (matmul-only scanned - unrolled)", "count": 1, "s": scan,
                 "share_of_encoder": scan / t_enc})
    rows.sort(key=lambda r: -r["s"])
    non_matmul = sum(r["s"] for r in rows)
    return {"method": "each op class jitted alone on the encoder's shapes x its count per pass "
                      "(fresh outputs each call: upper bounds)",
            "matmul_share_of_encoder": t_mm / t_enc, "ops": rows,
            "explained": (t_mm + non_matmul) / t_enc}


# ---------------------------------------------------------------- 3. decoding step against bandwidth
def bandwidth(mib: int = 512) -> dict:
    """Copy bandwidth: ``x + 1`` in place (``x`` donated: a fresh 512 MiB output would time
    first-touch page faults, not memory); a ``sum`` (read only) as a cross-check."""
    state = {"x": jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)}
    nbytes = state["x"].nbytes
    add = jax.jit(lambda a: a + 1.0, donate_argnums=0)

    def copy():
        state["x"] = add(state["x"])
        state["x"].block_until_ready()
    t = timed(copy)
    t_sum = run_jit(jnp.sum, state["x"])
    return {"array_mib": mib, "copy_s": t, "read_gb_per_s": nbytes / t / 1e9,
            "read_write_gb_per_s": 2 * nbytes / t / 1e9, "sum_read_only_gb_per_s": nbytes / t_sum / 1e9}


def step_bytes(dims, batch: int, position: int, itemsize: int = 4) -> dict:
    """Bytes one cached step for ``batch`` utterances at ``position`` must read."""
    shapes = param_shapes(dims)["decoder"]
    skip = {("blocks", "cross_attn", "key"), ("blocks", "cross_attn", "value"), ("positional_embedding",)}
    params = 0
    for path, shape in jax.tree_util.tree_flatten_with_path(
            shapes, is_leaf=lambda t: isinstance(t, tuple) and all(isinstance(i, int) for i in t))[0]:
        keys = tuple(k.key for k in path)
        if not any(keys[:len(s)] == s for s in skip):
            params += int(np.prod(shape))
    params += dims.n_text_state  # one positional row
    kv_row = 2 * dims.n_text_layer * dims.n_text_state * batch  # self k and v, all layers
    out = {"params": params * itemsize, "self_kv_to_position": kv_row * (position + 1) * itemsize,
           "self_kv_allocated": kv_row * dims.n_text_ctx * itemsize,
           "cross_kv": 2 * dims.n_text_layer * dims.n_audio_ctx * dims.n_text_state * batch * itemsize}
    out["must_read"] = out["params"] + out["self_kv_to_position"] + out["cross_kv"]
    out["as_allocated"] = out["params"] + out["self_kv_allocated"] + out["cross_kv"]
    return out


def part_decode(model, batch: int, read_bw: float) -> dict:
    dims, tok = model.dims, model.tokenizer
    features = jai.encode_batch(model.params, clip_mels(dims, batch), dims=dims)
    prompt = jnp.asarray(tok.prompt(), jnp.int32)
    mid, span = dims.n_text_ctx // 4, 8
    never_stop, zero = logit_bias(dims.n_vocab, [tok.eot]), logit_bias(dims.n_vocab, ())

    def loop(n):
        return lambda: greedy_decode(model.params, features, prompt, tok.eot, never_stop, zero, dims=dims,
                                     max_new_tokens=n).block_until_ready()
    t_loop = (timed(loop(mid + span)) - timed(loop(mid - span))) / (2 * span)
    hlo = greedy_decode.lower(model.params, features, prompt, tok.eot, never_stop, zero, dims=dims,
                              max_new_tokens=mid + span).compile().as_text()
    in_loop = [{**r, "s_per_step": r["s_per_call"] / (mid + span),
                "share_of_step": r["s_per_call"] / (mid + span) / t_loop}
               for r in trace_ops(loop(mid + span), hlo, top=40) if r["events_per_call"] >= mid + span][:10]

    # the step alone, prepared as greedy_decode prepares it (per-layer weights, cross K/V apart)
    decoder = model.params["decoder"]
    params = {"decoder": {**decoder, "blocks": layer_list(decoder["blocks"])}}
    cache = jax.vmap(lambda af: init_cache(model.params, af, dims=dims))(features)
    cross = {k: cache.pop(k) for k in ("cross_k", "cross_v")}
    fresh = lambda: jax.tree_util.tree_map(jnp.copy, cache)  # each step donates its cache
    position = len(prompt) + mid

    def make_step(readout):
        @functools.partial(jax.jit, donate_argnums=1)
        def step(params, self_kv, cross, tokens, offset):
            def one(c, t):
                logits, _, c = decode(params, t, None, dims=dims, cache=c, offset=offset, readout=readout)
                return logits[-1], {k: c[k] for k in ("self_k", "self_v")}
            logits, kv = jax.vmap(one)({**self_kv, **cross}, tokens)
            return jnp.argmax(logits + never_stop[: logits.shape[-1]], -1), kv  # as greedy_decode
        state = {"kv": fresh()}

        def call():
            token, state["kv"] = step(params, state["kv"], cross, jnp.zeros((batch, 1), jnp.int32), position)
            token.block_until_ready()
        return call
    t_step = timed(make_step(None))
    t_no_proj = timed(make_step(np.zeros((1, 1), np.int32)))
    table = decoder["token_embedding"]["embedding"]
    t_proj = run_jit(lambda x, t: jax.vmap(lambda r: jnp.matmul(r, t.T, precision="highest"))(x),
                     rand((batch, 1, dims.n_text_state)), table)
    t_empty = run_jit(lambda p, c, x, tk: tk + 1, params, cross, cache, jnp.zeros((batch, 1), jnp.int32))
    nbytes = step_bytes(dims, batch, position)
    bound = nbytes["must_read"] / read_bw
    return {"batch": batch, "position": position, "bytes": nbytes, "bound_s": bound,
            "bound_as_allocated_s": nbytes["as_allocated"] / read_bw,
            "step_in_loop_s": t_loop, "step_jitted_alone_s": t_step, "fraction": bound / t_loop,
            "fraction_step_alone": bound / t_step,
            "loop_trace_profile": in_loop,
            "held_back_by": {"step_without_vocab_projection_s": t_no_proj,
                             "vocab_projection_alone_s": t_proj,
                             "vocab_projection_bound_s": table.nbytes / read_bw,
                             "empty_jitted_call_with_step_args_s": t_empty}}


def main():
    global REPEATS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_roofline_cpu.json"))
    args = parser.parse_args()
    REPEATS = args.repeats
    result = {"device": str(jax.devices()[0]), "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "threads_available": len(os.sched_getaffinity(0)),
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "jax": jax.__version__, "dtype": "float32",
              "precision": "highest", "repeats": args.repeats, "timing": "median after one warm-up",
              "goals": GOALS}
    result["bandwidth"] = bw = bandwidth()
    result["models"] = {}
    for name in args.models.split(","):
        model = jai.load(name)
        enc = part_encoder(model, args.batch)
        dec = [part_decode(model, b, bw["read_gb_per_s"] * 1e9) for b in sorted({1, args.batch})]
        result["models"][name] = {"encoder": enc, "decode": dec, "met": {
            "encoder_fraction_of_matmul": enc["fraction"] >= GOALS["encoder_fraction_of_matmul"],
            "decode_fraction_of_bandwidth_bound": all(
                d["fraction"] >= GOALS["decode_fraction_of_bandwidth_bound"] for d in dec)}}
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
