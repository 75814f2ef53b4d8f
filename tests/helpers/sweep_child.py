"""A resumable head-patching sweep over random clips of a small random model (run as a
subprocess by tests/test_resumable.py, which kills it part-way).

    python sweep_child.py OUT_DIR LOG_FILE RESULT_NPZ SLEEP_S
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.whisper.model import encode, forward
from jaxasr_interp.patching.sweeps import head_sweep
from jaxasr_interp.core.resumable import resumable_map
from jaxasr_interp.weights.layout import param_shapes

DIMS = Dims(n_mels=80, n_audio_ctx=23, n_audio_state=70, n_audio_head=5, n_audio_layer=3,
            n_vocab=97, n_text_ctx=19, n_text_state=70, n_text_head=5, n_text_layer=3)


def random_params(seed=0):
    rng = np.random.default_rng(seed)
    is_shape = lambda x: isinstance(x, tuple) and all(isinstance(n, int) for n in x)
    return jax.tree_util.tree_map(lambda s: jnp.asarray(0.2 * rng.standard_normal(s), jnp.float32),
                                  param_shapes(DIMS), is_leaf=is_shape)


def main(out_dir, log_file, result_file, sleep_s):
    params = random_params()
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)).astype(np.float32) for _ in range(6)]
    noise = jnp.asarray(rng.standard_normal((DIMS.n_mels, DIMS.n_samples_frames)), jnp.float32)
    tokens = jnp.asarray(rng.integers(0, DIMS.n_vocab, 9), jnp.int32)
    _, ref = forward(params, noise, tokens, dims=DIMS, capture=["decoder.cross_attn.z"])

    def sweep(mel):
        features, _ = encode(params, mel, dims=DIMS)
        patched, clean = head_sweep(params, tokens, features, ref["decoder.cross_attn.z"],
                                    jnp.array([0.5, 1.0]), dims=DIMS)
        time.sleep(float(sleep_s))  # gives the test time to kill the process between chunks
        return {"patched": patched, "clean": clean}

    def computed(i):
        with open(log_file, "a") as f:
            f.write(f"{i}\n")

    results = resumable_map(sweep, clips, out_dir, key="test sweep v1", progress=False, on_computed=computed)
    np.savez(result_file, **{f"{k}_{i}": r[k] for i, r in enumerate(results) for k in r})


if __name__ == "__main__":
    main(*sys.argv[1:])
