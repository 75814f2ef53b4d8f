"""Runs the batched entry points on a small random model and saves their results (run by
tests/test_sharding.py with 1 and with 8 host devices).

    XLA_FLAGS=--xla_force_host_platform_device_count=N python sharded_child.py OUT.npz
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.whisper.api import encode_batch
from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
from jaxasr_interp.probes.sweep import planted_features, probe_sweep
from jaxasr_interp.core.sharding import shard_leading
from sweep_child import DIMS, random_params


def main(out):
    params = random_params()
    rng = np.random.default_rng(3)
    mels = shard_leading(jnp.asarray(rng.standard_normal((8, DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32))
    features = encode_batch(params, mels, dims=DIMS)
    bias = logit_bias(DIMS.n_vocab, ())
    ids = greedy_decode(params, features, jnp.array([1, 2], jnp.int32), 0, bias, bias, dims=DIMS,
                        max_new_tokens=10)
    labels = np.tile([0, 1], 30)
    probe = probe_sweep(planted_features(labels, 5, 24, layers=[3], strength=3.0), labels, k=3,
                        seeds=(0, 1), l2=(0.01,))
    np.savez(out, features=np.asarray(features), ids=np.asarray(ids), acc=probe.accuracy,
             control=probe.control_accuracy, n_devices=len(features.sharding.device_set),
             device_count=jax.device_count())


if __name__ == "__main__":
    main(sys.argv[1])
