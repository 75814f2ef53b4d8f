"""Forward and greedy decoding of tiny.en: JAX against PyTorch eager, one run, same machine.

(a) teacher-forced forward, batch 8 (real clips, their transcript tokens padded to one length);
(b) greedy decoding of 8 real clips end to end (encoder + decoding loop): our jitted KV-cache
    loop against transformers' `generate` (greedy, same prompt, same max length, no token
    suppression on either side);
(c) the decoding loop alone, both sides given the same encoder output.
Each side is warmed up; JAX results are `block_until_ready`; PyTorch is timed at 1 and 2
threads and its best is used. Prints device, dtype, both times and the ratio.

    python benchmarks/bench_forward.py [--model tiny.en] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import jaxasr_interp as jai
from jaxasr_interp.whisper.decoding import logit_bias
from jaxasr_interp.weights.hf import to_transformers


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (compilation for JAX)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def torch_best(fn, repeats: int) -> tuple[float, int]:
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append((best_time(fn, repeats), threads))
    return min(results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    model = jai.load(args.model)
    dims, tok = model.dims, model.tokenizer
    names = list(jai.sample_transcripts())
    names = (names * args.batch)[: args.batch]
    mels = jnp.stack([jai.log_mel(jai.load_audio(jai.sample_path(n)), n_mels=dims.n_mels) for n in names])
    texts = jai.sample_transcripts()
    seqs = [tok.prompt() + tok.encode(" " + texts[n]) for n in names]
    length = max(map(len, seqs))
    tokens = np.array([s + [tok.eot] * (length - len(s)) for s in seqs], np.int32)
    torch_model = to_transformers(jax.tree_util.tree_map(np.asarray, model.params), dims)
    mels_t = torch.from_numpy(np.asarray(mels))
    tokens_t = torch.from_numpy(tokens).long()
    prompt = jnp.asarray(tok.prompt(), jnp.int32)
    max_new = dims.n_text_ctx // 2
    zero = logit_bias(dims.n_vocab, ())

    fwd = jax.jit(jax.vmap(lambda m, t: jai.forward(model.params, m, t, dims=dims)[0]))
    jax_fwd = best_time(lambda: fwd(mels, jnp.asarray(tokens)).block_until_ready(), args.repeats)

    def torch_fwd():
        with torch.no_grad():
            torch_model(input_features=mels_t, decoder_input_ids=tokens_t)
    t_fwd, t_fwd_threads = torch_best(torch_fwd, args.repeats)

    def jax_decode():
        feats = jai.encode_batch(model.params, mels, dims=dims)
        return jai.greedy_decode(model.params, feats, prompt, tok.eot, zero, zero, dims=dims,
                                 max_new_tokens=max_new).block_until_ready()
    jax_dec = best_time(jax_decode, args.repeats)
    ours = np.asarray(jax_decode())

    def torch_decode():
        with torch.no_grad():
            return torch_model.generate(mels_t, decoder_input_ids=torch.tensor([tok.prompt()] * len(names)),
                                        max_new_tokens=max_new, do_sample=False, num_beams=1,
                                        suppress_tokens=None, begin_suppress_tokens=None)
    t_dec, t_dec_threads = torch_best(torch_decode, args.repeats)
    theirs = torch_decode()

    feats = jai.encode_batch(model.params, mels, dims=dims)
    jax_loop = best_time(lambda: jai.greedy_decode(model.params, feats, prompt, tok.eot, zero, zero, dims=dims,
                                                   max_new_tokens=max_new).block_until_ready(), args.repeats)
    from transformers.modeling_outputs import BaseModelOutput
    feats_t = BaseModelOutput(last_hidden_state=torch.from_numpy(np.asarray(feats)))

    def torch_loop():
        with torch.no_grad():
            return torch_model.generate(encoder_outputs=feats_t, decoder_input_ids=torch.tensor([tok.prompt()] * len(names)),
                                        max_new_tokens=max_new, do_sample=False, num_beams=1,
                                        suppress_tokens=None, begin_suppress_tokens=None)
    t_loop, t_loop_threads = torch_best(torch_loop, args.repeats)
    same = all(tok.decode(a) == tok.decode(b.tolist()) for a, b in zip(ours, theirs))

    report = {
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}",
        "jax_backend": jax.default_backend(), "dtype": "float32", "model": args.model, "batch": len(names),
        "forward": {"jax_s": jax_fwd, "torch_s": t_fwd, "torch_threads": t_fwd_threads, "speedup": t_fwd / jax_fwd},
        "greedy": {"jax_s": jax_dec, "torch_s": t_dec, "torch_threads": t_dec_threads, "speedup": t_dec / jax_dec,
                   "identical_transcripts": same},
        "decoding_loop_only": {"jax_s": jax_loop, "torch_s": t_loop, "torch_threads": t_loop_threads,
                               "speedup": t_loop / jax_loop},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
