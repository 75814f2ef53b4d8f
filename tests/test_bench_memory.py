"""benchmarks/bench_memory.py on a tiny config: one analysis compiled on abstract shapes, one device."""

import math
import sys
from pathlib import Path

import jaxasr_interp as jai
from jaxasr_interp.weights.layout import iter_paths, param_shapes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_memory  # noqa: E402


def test_measure_tiny_transcription():
    dims = jai.preset("tiny.en")
    row = bench_memory.measure("transcribe", dims, "float32", n_devices=1)
    param_bytes = 4 * sum(math.prod(s) for _, s in iter_paths(param_shapes(dims)))
    assert row["param_bytes_per_device"] == param_bytes
    assert row["argument"] >= param_bytes  # every parameter is an argument (keep_unused)
    assert row["temp"] > 0 and row["output"] > 0
    assert row["peak"] == row["argument"] + row["output"] + row["temp"] - row["alias"]
    assert row["peak"] >= param_bytes
    fit = bench_memory.fit(row["peak"])
    assert fit["v5e"]["fits"] and fit["v5e"]["shortfall_bytes"] == 0
    over = bench_memory.fit(int(0.8 * bench_memory.CHIPS["v5e"]) + 1)["v5e"]
    assert not over["fits"] and over["shortfall_bytes"] == 1
