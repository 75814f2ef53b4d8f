"""Resumable sweeps survive SIGKILL: finished chunks are restored, not recomputed, and the
results equal an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxasr_interp.core.resumable import finished_chunks, resumable_map

CHILD = Path(__file__).parent / "helpers" / "sweep_child.py"


def run_child(tmp, name, sleep_s, wait=True):
    args = [sys.executable, str(CHILD), str(tmp / name), str(tmp / f"{name}.log"), str(tmp / f"{name}.npz"), str(sleep_s)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if wait:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return proc


def logged(path):
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_killed_sweep_resumes_without_recomputing_and_gives_identical_results(tmp_path):
    run_child(tmp_path, "whole", 0)
    proc = run_child(tmp_path, "killed", 1.5, wait=False)
    deadline = time.time() + 240
    while len(logged(tmp_path / "killed.log")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    first = logged(tmp_path / "killed.log")
    done = finished_chunks(tmp_path / "killed")
    # a chunk is logged after it is saved: the kill may fall between the two
    assert 2 <= len(first) <= len(done) <= len(first) + 1 and len(done) < 6
    assert done[: len(first)] == first
    run_child(tmp_path, "killed", 0)
    second = logged(tmp_path / "killed.log")[len(first):]
    assert sorted(second) == [i for i in range(6) if i not in done]  # finished chunks not redone
    whole, resumed = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "killed.npz")
    assert sorted(whole.files) == sorted(resumed.files) and len(whole.files) == 12
    for name in whole.files:
        assert np.array_equal(whole[name], resumed[name]), name


def test_a_directory_of_another_sweep_is_refused(tmp_path):
    resumable_map(lambda x: {"y": np.asarray(x) * 2}, [1, 2], tmp_path, key="a", progress=False)
    out = resumable_map(lambda x: {"y": np.asarray(x) * 3}, [1, 2], tmp_path, key="a", progress=False)
    assert [int(r["y"]) for r in out] == [2, 4]  # restored, not recomputed
    with pytest.raises(ValueError, match="holds another sweep"):
        resumable_map(lambda x: x, [1, 2], tmp_path, key="b", progress=False)
