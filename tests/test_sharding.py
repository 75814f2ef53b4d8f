"""Sharded over 8 host devices, batched entry points give the results of one device."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CHILD = Path(__file__).parent / "helpers" / "sharded_child.py"


def run(tmp_path, n_devices):
    out = tmp_path / f"d{n_devices}.npz"
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n_devices}",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(CHILD), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return np.load(out)


def test_eight_devices_give_the_results_of_one(tmp_path):
    one, eight = run(tmp_path, 1), run(tmp_path, 8)
    assert int(one["device_count"]) == 1 and int(eight["device_count"]) == 8
    assert int(eight["n_devices"]) == 8  # the batch really was split over the devices
    np.testing.assert_allclose(eight["features"], one["features"], rtol=0, atol=1e-5)
    assert np.array_equal(eight["ids"], one["ids"])
    # the same items right (one item is 1/60 of accuracy); the mean over folds may round apart
    for key in ("acc", "control"):
        np.testing.assert_allclose(eight[key], one[key], rtol=0, atol=1e-6)
    assert eight["acc"][3].max() > 0.9 > eight["acc"][0].max()  # and the probes did find the planted layer
