"""Cross-attention head sweep on tiny.en: one compiled JAX program against PyTorch hook loops.

Every decoder layer x head x alpha in {0.25, 0.5, 0.75, 1.0}, patching ``cross_attn.z`` (the
head's weighted values, before the output projection) towards a seeded white-noise reference
run teacher-forced with the clean tokens, on 16 real clips; metric = mean change of the clean
tokens' logits. Sides:

* JAX: clean encoder, reference run and the whole sweep in one jitted program (compilation
  included in the first timing; steady state after warm-up), ``block_until_ready``;
* (a) PyTorch, one full forward per patch with a forward pre-hook (as TransformerLens and
  nnsight users do): a sample of patches is timed and scaled by the patch count;
* (b) PyTorch, a loop that reuses each clip's encoder output (decoder pass per patch), run in
  full (or on ``--torch-clips`` clips, scaled);
* the same sweep on the first ``--public-clips`` clips written by a user through the public
  contract only (README, "Sweeps"): a ``jit`` of ``vmap``s over (clip, head, alpha) of
  ``jai.decode`` resumed at each layer (``start_layer``, ``cross``) with ``edits`` and a
  ``readout`` of the clean tokens ("resumed"), and the plainest form, a ``jit`` of ``vmap``s of
  ``jai.forward`` with ``edits`` and ``readout`` ("forward"); one run each, compilation
  included, against (a) and (b) on the same clips.

PyTorch is timed at 1 and 2 threads on a sample and runs at its best. Prints and writes the
ratios and the largest metric difference between JAX and (b).

``--compile-cache DIR`` turns on JAX's persistent compilation cache there (off by default, so
the first calls include a cold compilation): run twice, and the second run's first calls show
the cost once compiled programs are on disk (README: compile once per machine).

    python benchmarks/bench_patching.py [--model tiny.en] [--torch-clips 16] [--public-clips 4]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

import jaxasr_interp as jai
from jaxasr_interp.patching.sweeps import head_sweep
from jaxasr_interp.whisper.model import cross_kv_stack
from jaxasr_interp.weights.hf import to_transformers

ALPHAS = (0.25, 0.5, 0.75, 1.0)
SITE = "decoder.cross_attn.z"
TESTDATA = Path("/usr/share/pocketsphinx/test/data")


def real_clips(n: int) -> list[np.ndarray]:
    """The bundled clips, then pocketsphinx-testdata's (if installed), cycled to ``n``."""
    clips = [jai.load_audio(jai.sample_path(name)) for name in jai.sample_transcripts()]
    clips += [jai.load_audio(p) for p in sorted(TESTDATA.glob("cards/*.wav"))]
    clips += [np.fromfile(p, "<i2").astype(np.float32) / 32768 for p in sorted(TESTDATA.rglob("*.raw"))]
    return [clips[i % len(clips)] for i in range(n)]


def jax_program(dims):
    @jax.jit  # params are arguments, not closed-over constants (XLA would constant-fold them)
    def sweep(params, noise_mel, mels, tokens, valid):
        features = jax.vmap(lambda m: jai.encode(params, m, dims=dims)[0])(mels)
        noise_features, _ = jai.encode(params, noise_mel, dims=dims)

        def clip(args):
            toks, feats, ok = args
            _, ref = jai.decode(params, toks, noise_features, dims=dims, capture=["decoder.cross_attn.z"])
            patched, clean = head_sweep(params, toks, feats, ref["decoder.cross_attn.z"], jnp.asarray(ALPHAS), dims=dims)
            return ((patched - clean) * ok).sum(-1) / ok.sum()  # [L, H, A]

        return jax.lax.map(clip, (tokens, features, valid))
    return sweep


def public_program(dims, resumed: bool):
    """The head sweep as a user writes it with the public contract: [clips, L, H, A]."""
    n_layer, n_head = dims.n_text_layer, dims.n_text_head

    @jax.jit
    def sweep(params, noise_mel, mels, tokens, valid):
        noise_features, _ = jai.encode(params, noise_mel, dims=dims)
        alphas = jnp.asarray(ALPHAS)

        def clip(mel, toks, ok):
            ids = jnp.roll(toks, -1)[:, None]  # [T, 1]: the next clean token at each position
            _, ref = jai.decode(params, toks, noise_features, dims=dims, capture=[SITE])
            features, _ = jai.encode(params, mel, dims=dims)
            base, clean = jai.decode(params, toks, features, dims=dims, readout=ids,
                                     capture=["decoder.resid_pre"])
            cross = cross_kv_stack(params, features, dims=dims)

            def one(layer, head, alpha):
                edits = {SITE: jai.interpolate(ref[SITE], alpha, layers=[layer], heads=head)}
                if resumed:  # layers below `layer` are the clean run's: start from its residual
                    logits, _ = jai.decode(params, clean["decoder.resid_pre"][layer], None, dims=dims,
                                           start_layer=layer, cross=cross, edits=edits, readout=ids)
                else:
                    logits, _ = jai.forward(params, mel, toks, dims=dims, edits=edits, readout=ids)
                return ((logits - base)[:-1, 0] * ok).sum() / ok.sum()

            grid = [jax.vmap(jax.vmap(lambda h, a, l=layer: one(l, h, a), (None, 0)), (0, None))(
                jnp.arange(n_head), alphas) for layer in range(n_layer)]  # layer: static
            return jnp.stack(grid)  # [L, H, A]

        return jax.vmap(clip)(mels, tokens, valid)
    return sweep


def torch_sweep(tm, dims, mels, seqs, noise_mel, patches, full_forward: bool):
    """Metric per patch with hooks, and the seconds each took (a clip's encoder and reference
    runs counted in its first patch); ``patches`` = [(clip, layer, head, alpha)]."""
    n_head, dh = dims.n_text_head, dims.n_text_state // dims.n_text_head
    with torch.no_grad():
        noise_enc = tm.model.encoder(torch.from_numpy(noise_mel)[None]).last_hidden_state
        cache = {}
        out, seconds = np.zeros(len(patches)), np.zeros(len(patches))
        for i, (c, layer, head, alpha) in enumerate(patches):
            start = time.perf_counter()
            ids = torch.tensor(seqs[c])[None]
            if c not in cache:
                enc = tm.model.encoder(torch.from_numpy(mels[c])[None]).last_hidden_state
                refz = {}
                hooks = [tm.model.decoder.layers[l].encoder_attn.out_proj.register_forward_pre_hook(
                    lambda m, a, l=l: refz.__setitem__(l, a[0].view(-1, n_head, dh).clone()))
                    for l in range(dims.n_text_layer)]
                tm(encoder_outputs=BaseModelOutput(last_hidden_state=noise_enc), decoder_input_ids=ids)
                for h in hooks:
                    h.remove()
                clean = tm(encoder_outputs=BaseModelOutput(last_hidden_state=enc), decoder_input_ids=ids).logits[0]
                cache = {c: (enc, refz, clean[torch.arange(len(seqs[c]) - 1), ids[0, 1:]])}
            enc, refz, clean = cache[c]

            def patch(m, a):
                z = a[0].clone().view(1, -1, n_head, dh)
                z[0, :, head] = (1 - alpha) * z[0, :, head] + alpha * refz[layer][:, head]
                return (z.view(1, z.shape[1], -1),)

            hook = tm.model.decoder.layers[layer].encoder_attn.out_proj.register_forward_pre_hook(patch)
            inputs = ({"input_features": torch.from_numpy(mels[c])[None]} if full_forward
                      else {"encoder_outputs": BaseModelOutput(last_hidden_state=enc)})
            logits = tm(decoder_input_ids=ids, **inputs).logits[0]
            hook.remove()
            out[i] = float((logits[torch.arange(len(seqs[c]) - 1), ids[0, 1:]] - clean).mean())
            seconds[i] = time.perf_counter() - start
    return out, seconds


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def public_sides(dims, args_j, n_public: int, variants) -> dict:
    """Each public-contract variant on the first ``n_public`` clips: one run, compilation
    included, then a warm run -> {variant: (first_s, steady_s, metric [n_public, L, H, A])}."""
    params, noise_mel, mels, tokens, valid = args_j
    sub = (params, noise_mel, mels[:n_public], tokens[:n_public], valid[:n_public])
    out = {}
    for variant in variants:
        sweep = public_program(dims, resumed=variant == "resumed")
        first, _ = timed(lambda: sweep(*sub).block_until_ready())
        steady, metric = timed(lambda: sweep(*sub).block_until_ready())
        out[variant] = (first, steady, np.asarray(metric))
    return out


def torch_sides(tm, dims, mels, seqs, noise_mel, patches, args):
    """Best thread count on a sample; (b) on ``--torch-clips`` clips, (a) on ``--sample-a``
    patches -> (threads, per-patch seconds of (b), its metric, seconds per patch of (a))."""
    sample = patches[:8]
    torch_sweep(tm, dims, mels, seqs, noise_mel, sample, False)  # warm-up
    best = min((timed(lambda: (torch.set_num_threads(t), torch_sweep(tm, dims, mels, seqs, noise_mel, sample, False)))[0], t)
               for t in (1, 2))[1]
    torch.set_num_threads(best)
    n_b = args.torch_clips * (len(patches) // args.clips)
    metric_b, seconds_b = torch_sweep(tm, dims, mels, seqs, noise_mel, patches[:n_b], False)
    sample_a = patches[: args.sample_a]
    time_a, _ = timed(lambda: torch_sweep(tm, dims, mels, seqs, noise_mel, sample_a, True))
    return best, seconds_b, metric_b, time_a / len(sample_a)


def public_results(public: dict, seconds_b, metric_b, a_per_patch: float, n_patches: int) -> dict:
    time_b, time_a = float(seconds_b[:n_patches].sum()), a_per_patch * n_patches
    out = {"public_patches": n_patches, "public_torch_b_s": time_b, "public_torch_a_s (scaled)": time_a}
    for variant, (first, steady, metric) in public.items():
        out.update({f"public_{variant}_first_call_s": first, f"public_{variant}_steady_s": steady,
                    f"public_{variant}_speedup_vs_a_compile_included": time_a / first,
                    f"public_{variant}_speedup_vs_b_compile_included": time_b / first,
                    f"public_{variant}_max_abs_metric_diff_vs_b":
                        float(np.abs(metric.reshape(-1) - metric_b[:n_patches]).max())})
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--torch-clips", type=int, default=16, help="clips run in full by baseline (b)")
    parser.add_argument("--sample-a", type=int, default=6, help="patches timed for baseline (a)")
    parser.add_argument("--public-clips", type=int, default=4, help="clips of the public-contract sweeps")
    parser.add_argument("--public", default="resumed,forward", help="public-contract variants to time ('' for none)")
    parser.add_argument("--compile-cache", default=None, metavar="DIR", help="persistent compilation cache (default: off)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_patching_cpu.json"))
    args = parser.parse_args()
    if args.compile_cache:
        jai.enable_compilation_cache(args.compile_cache)
    if not args.public_clips <= args.torch_clips <= args.clips:
        parser.error("need --public-clips <= --torch-clips <= --clips")

    model = jai.load(args.model)
    dims = model.dims
    audio = real_clips(args.clips)
    mels = np.stack([np.asarray(jai.log_mel(a, n_mels=dims.n_mels)) for a in audio])
    prompt = model.tokenizer.prompt()
    seqs = [prompt + ids + [model.tokenizer.eot] for ids in jai.transcribe_ids(model, list(audio))]
    t_max = max(map(len, seqs))
    tokens = np.array([s + [model.tokenizer.eot] * (t_max - len(s)) for s in seqs], np.int32)
    valid = np.array([[i < len(s) - 1 for i in range(t_max - 1)] for s in seqs], np.float32)
    noise_mel = np.asarray(jai.log_mel(jai.white_noise(seed=0), n_mels=dims.n_mels))

    args_j = (model.params, jnp.asarray(noise_mel), jnp.asarray(mels), jnp.asarray(tokens), jnp.asarray(valid))
    public = public_sides(dims, args_j, args.public_clips, [v for v in args.public.split(",") if v])
    sweep = jax_program(dims)
    jax_first, _ = timed(lambda: sweep(*args_j).block_until_ready())
    jax_steady, jax_metric = timed(lambda: sweep(*args_j).block_until_ready())

    tm = to_transformers(jax.tree_util.tree_map(np.asarray, model.params), dims)
    patches = [(c, l, h, a) for c in range(args.clips) for l in range(dims.n_text_layer)
               for h in range(dims.n_text_head) for a in ALPHAS]
    best, seconds_b, metric_b, a_per_patch = torch_sides(tm, dims, mels, seqs, noise_mel, patches, args)
    n_b = len(metric_b)
    time_b, time_a = float(seconds_b.sum()) * len(patches) / n_b, a_per_patch * len(patches)

    result = {
        "device": str(jax.devices()[0]), "cpu": platform.processor() or platform.machine(),
        "model": args.model, "dtype": "float32", "clips": args.clips, "patches": len(patches),
        "tokens_padded": t_max, "torch_threads": best,
        "jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "jax_first_call_s": jax_first, "jax_steady_s": jax_steady,
        "torch_a_full_forward_s (scaled from %d patches)" % args.sample_a: time_a,
        "torch_b_reuse_encoder_s" + ("" if n_b == len(patches) else f" (scaled from {n_b} patches)"): time_b,
        "speedup_vs_a_compile_included": time_a / jax_first, "speedup_vs_b_compile_included": time_b / jax_first,
        "speedup_vs_a_steady": time_a / jax_steady, "speedup_vs_b_steady": time_b / jax_steady,
        "max_abs_metric_diff_vs_b": float(np.abs(np.asarray(jax_metric).reshape(-1)[:n_b] - metric_b).max()),
        "max_abs_metric": float(np.abs(metric_b).max()),
        **public_results(public, seconds_b, metric_b, a_per_patch, args.public_clips * len(patches) // args.clips),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
