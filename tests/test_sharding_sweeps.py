"""Every sweep on 8 host devices, parameters sharded FSDP-style, gives the results of one device.

tests/helpers/sharded_sweeps_child.py runs a forward pass, the head, component and decoding
sweeps, batched and single attribution patching and the encoder lens on a small random model
with its parameters split by ``whisper.sharding.shard_params``, once with 1 and once with 8
forced host devices (both children at once). The work is really split: parameters are split
(fewer bytes per device) and XLA's FLOP count of one device's program falls to its share.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import jaxasr_interp as jai
from jaxasr_interp.weights.layout import is_stacked, iter_paths, param_shapes
from jaxasr_interp.whisper.sharding import partition_spec

CHILD = Path(__file__).parent / "helpers" / "sharded_sweeps_child.py"
# float32 sums split over devices round apart: 1e-5 of the largest magnitude (seen: 2e-6 .. 6e-7)
REL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[dict, dict]:
    tmp_path = tmp_path_factory.mktemp("sharded_sweeps")
    procs = {}
    for n in (1, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
        procs[n] = subprocess.Popen([sys.executable, str(CHILD), str(tmp_path / f"d{n}.npz")], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for proc in procs.values():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    return tuple(dict(np.load(tmp_path / f"d{n}.npz")) for n in (1, 8))


def close(got, want, rel=REL):
    """Two-sided: |got - want| <= rel * max |want| everywhere."""
    np.testing.assert_allclose(got, want, rtol=0, atol=rel * np.abs(want).max())


def test_sweeps_on_eight_devices_with_sharded_params_give_the_results_of_one(runs):
    one, eight = runs
    assert (int(one["device_count"]), int(eight["device_count"]), int(eight["mesh_size"])) == (1, 8, 8)

    # the parameters really are split: 7 leaves of the toy model divide by 8, and a device holds about half
    assert int(one["split_leaves"]) == 0 and int(eight["split_leaves"]) == 7
    assert eight["param_bytes"] < 0.55 * eight["param_bytes_unsharded"]
    # ... and the work: one device's program does its share of the FLOPs (ideal 1/8, plus the
    # replicated clean pass; attribution: 3 utterances, 1 a device)
    for name in ("head", "decode", "attr", "lens_raw"):
        assert eight[f"flops.{name}"] < 0.4 * one[f"flops.{name}"], name

    close(eight["logits"], eight["logits_unsharded"])
    for key in ("logits", "resid", "head", "head_clean", "decoder.cross_head.logprob",
                "decoder.cross_head.clean", "encoder.block.logprob", "encoder.block.clean", "attr_score",
                "attr_one_score", *(k for k in one if k.startswith("attr."))):
        close(eight[key], one[key])
    for key in ("decoder.cross_head.top", "encoder.block.top", "decode", "decode_chunked", "lens", "lens_raw"):
        assert np.array_equal(eight[key], one[key]), key


def test_chunking_and_batching_change_nothing_but_memory(runs):
    one, eight = runs
    for r in (one, eight):
        assert np.array_equal(r["decode_chunked"], r["decode"])
        for key in (k for k in r if k.startswith("attr_one.")):
            close(r["attr." + key.split(".", 1)[1]][0], r[key])  # batched attribution = one utterance
        close(r["attr_score"][0:1], r["attr_one_score"][None])
    assert np.array_equal(one["lens"], one["lens_unchunked"])
    # the comparisons are not vacuous: the patches moved the numbers far beyond the tolerance
    assert np.abs(one["head"] - one["head_clean"][None, None, None]).max() > 1e3 * REL
    assert np.abs(one["decoder.cross_head.logprob"] - one["decoder.cross_head.clean"]).max() > 1e3 * REL
    assert len({tuple(row) for row in one["decode"]}) > 1


def test_large_v3_parameters_split_eight_ways_never_along_the_layer_axis():
    shapes = dict(iter_paths(param_shapes(jai.preset("large-v3"))))
    specs = {p: tuple(partition_spec(p, s, 8)) for p, s in shapes.items()}
    total = sum(math.prod(s) for s in shapes.values())
    per_device = sum(math.prod(s) // (8 if any(specs[p]) else 1) for p, s in shapes.items())
    assert 0.125 < per_device / total < 0.13  # 0.72 of 5.75 GiB in float32: replicated leaves are small
    assert all(not (is_stacked(p) and specs[p][:1] == ("batch",)) for p in shapes)
    assert specs["decoder/token_embedding/embedding"] == (None, "batch")  # 51866 rows do not divide by 8
    assert specs["decoder/blocks/mlp1/kernel"] == (None, None, "batch")
    assert not any(specs["encoder/conv1/kernel"]) and not any(specs["decoder/blocks/attn/query/bias"])
