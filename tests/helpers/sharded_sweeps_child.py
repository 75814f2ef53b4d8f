"""Runs every sweep on a small random model with its parameters sharded (FSDP-style) and saves
the results (run by tests/test_sharding_sweeps.py with 1 and with 8 host devices).

    XLA_FLAGS=--xla_force_host_platform_device_count=N python sharded_sweeps_child.py OUT.npz

Besides the results: ``split_leaves`` (parameters split over the devices), ``flops.*`` (XLA's
FLOP count of one device's compiled program, for sweeps run in one step: on 8 devices each
device does its share) and, on one device, the encoder lens decoded without chunks
(``lens_unchunked``).
"""

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.sharding import batch_mesh
from jaxasr_interp.lenses.encoder import encoder_lens_ids
from jaxasr_interp.patching import attribution as attr
from jaxasr_interp.patching.decoding import decode_sweep
from jaxasr_interp.patching.sweeps import component_sweep, head_sweep
from jaxasr_interp.whisper.decoding import logit_bias
from jaxasr_interp.whisper.model import encode, forward
from jaxasr_interp.whisper.sharding import bytes_per_device, shard_params
from sweep_child import DIMS, random_params

ALPHAS = jnp.array([0.5, 1.0, 0.25])  # 5 heads x 3 alphas = 15 patches a layer: padded to 16 on 8 devices
PROMPT = jnp.array([1, 2], jnp.int32)


def run(out, name, fn, *args):
    """``fn(*args)`` compiled once; its result and its per-device FLOP count (``flops.name``)."""
    compiled = jax.jit(fn).lower(*args).compile()
    cost = compiled.cost_analysis()
    out[f"flops.{name}"] = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    return compiled(*args)


def sweeps(params, mels, tokens, out):
    """Head, component and decoding sweeps of utterance 0, towards utterance 1's activations."""
    sites = ["decoder.cross_attn.z", "encoder.resid_post", "decoder.mlp_out"]
    _, ref = forward(params, mels[1], tokens[0], dims=DIMS, capture=sites)
    feats, _ = encode(params, mels[0], dims=DIMS)
    out["head"], out["head_clean"] = run(out, "head", functools.partial(head_sweep, dims=DIMS),
                                         params, tokens[0], feats, ref[sites[0]], ALPHAS)
    for family, site in (("decoder.cross_head", sites[0]), ("encoder.block", sites[1])):
        # chunk=1: on 8 devices 2 steps of 8 patches (15 padded to 16), or 1 step (3 padded to 8)
        patched, clean = component_sweep(params, mels[0], tokens[0], ref[site], ALPHAS, dims=DIMS,
                                         family=family, chunk=1)
        out[f"{family}.logprob"], out[f"{family}.top"] = patched["logprob"], patched["top"]
        out[f"{family}.clean"] = clean["logprob"]
    w = jnp.zeros((10, DIMS.n_text_layer, 1, 1)).at[jnp.arange(10), jnp.arange(10) % 3].set(
        jnp.linspace(0.2, 2.0, 10)[:, None, None])
    dec = lambda p, f, r, w, chunk: decode_sweep(p, f, PROMPT, 0, {sites[2]: r}, {sites[2]: w}, dims=DIMS,
                                                 max_new_tokens=8, chunk=chunk)
    out["decode"] = run(out, "decode", functools.partial(dec, chunk=None), params, feats, ref[sites[2]], w)
    out["decode_chunked"] = dec(params, feats, ref[sites[2]], w, 1)


def attribution(params, mels, tokens, out):
    fams = ("decoder.mlp", "decoder.cross_head", "encoder.attn")
    sites = {f: attr.FAMILIES[f] for f in fams}
    refs = [forward(params, mels[(i + 1) % 3], tokens[i], dims=DIMS, capture=list(sites.values()))[1]
            for i in range(3)]
    refs = {f: jnp.stack([r[s] for r in refs]) for f, s in sites.items()}
    weights = jnp.ones(tokens.shape)[:, 1:]
    batch = functools.partial(attr.attribution_batch, dims=DIMS, families=fams)
    grads, out["attr_score"] = run(out, "attr", batch, params, mels, tokens, refs, weights)
    first = {f: r[0] for f, r in refs.items()}
    one, out["attr_one_score"] = attr.attribution_patching(params, mels[0], tokens[0], first, weights[0], dims=DIMS,
                                                           families=fams)
    for f in fams:
        out[f"attr.{f}"], out[f"attr_one.{f}"] = grads[f], one[f]


def lens(params, mels, out):
    bias = logit_bias(DIMS.n_vocab, ())
    ids = lambda p, m, row_chunk, ln_post=True: encoder_lens_ids(
        p, m, PROMPT, 0, bias, bias, dims=DIMS, max_new_tokens=10, row_chunk=row_chunk, ln_post=ln_post)
    out["lens"] = ids(params, mels[:1], 1)  # 3 rows, one at a time (on 8 devices: padded to 8)
    raw = run(out, "lens_raw", functools.partial(ids, row_chunk=None, ln_post=False), params, mels[:2])  # 8 rows
    out["lens_raw"], out["lens_raw_replicated"] = raw, raw.sharding.is_fully_replicated
    if jax.device_count() == 1:
        out["lens_unchunked"] = ids(params, mels[:1], None)


def main(path):
    unsharded = random_params()
    params = shard_params(unsharded, min_elements=0)  # every divisible leaf of the toy model split
    leaves = jax.tree_util.tree_leaves(params)
    out = {"device_count": jax.device_count(), "mesh_size": batch_mesh().size,
           "split_leaves": sum(not x.sharding.is_fully_replicated for x in leaves),
           "param_bytes": bytes_per_device(params), "param_bytes_unsharded": bytes_per_device(unsharded)}
    rng = np.random.default_rng(5)
    mels = jnp.asarray(rng.standard_normal((3, DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, (3, 9)), jnp.int32)
    out["logits"], acts = forward(params, mels[0], tokens[0], dims=DIMS, capture=["encoder.resid_post"])
    out["resid"] = acts["encoder.resid_post"]
    out["logits_unsharded"] = forward(unsharded, mels[0], tokens[0], dims=DIMS)[0]
    sweeps(params, mels, tokens, out)
    attribution(params, mels, tokens, out)
    lens(params, mels, out)
    np.savez(path, **{k: np.asarray(v) for k, v in out.items()})


if __name__ == "__main__":
    main(sys.argv[1])
