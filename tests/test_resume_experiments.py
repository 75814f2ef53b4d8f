"""The long experiments and scripts/lens_tables.py resume after SIGKILL: a run killed once its
first item is on disk, then rerun with the same work directory, gives results identical to an
uninterrupted run, without recomputing the finished items; another configuration in the same
directory is a one-line error. tiny.en, small sizes."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from jaxasr_interp.experiments import repetition_pool as RP
from jaxasr_interp.experiments.stages import Work, as_texts, pad_rows, unpad_row
from jaxasr_interp.whisper.audio import SAMPLE_RATE

ROOT = Path(__file__).resolve().parents[1]
REPETITION = """
import json, sys
from pathlib import Path
import jaxasr_interp as jai
from jaxasr_interp.experiments import repetition as R
work, out, *audio = sys.argv[1:]
result = R.run(jai.load("tiny.en"), audio=audio, alphas=(1.0,), max_new_tokens=24, work_dir=work)
Path(out).write_text(json.dumps(result, sort_keys=True, default=lambda x: x.tolist()))
"""
LENS_TABLES = [sys.executable, str(ROOT / "scripts" / "lens_tables.py"), "--models", "tiny.en", "--clips", "2",
               "--max-new-tokens", "16"]


def _start(cmd):
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]


def _kill_when(path: Path, proc) -> tuple:
    """SIGKILL ``proc`` as soon as ``path`` (its first finished item) is on disk -> the file's
    (mtime, inode), to show that the rerun reads it back instead of writing it again."""
    deadline = time.time() + 900
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return path.stat().st_mtime_ns, path.stat().st_ino


def test_work_in_memory_and_on_disk_agree(tmp_path):
    calls = []

    def fn(i):
        calls.append(i)
        return dict(ids=pad_rows([[i, 7], [3]]), texts=np.asarray([f"item {i}", "é"]), x=np.float32(i) / 3,
                    bf16=jnp.full(2, i / 3, jnp.bfloat16))  # saved as float32, exactly

    mem = Work(None, {}, what="test").map("stage", fn, [1, 2])
    disk = Work(tmp_path, dict(n=2), what="test").map("stage", fn, [1, 2])
    again = Work(tmp_path, dict(n=2), what="test").map("stage", fn, [1, 2])
    assert calls == [1, 2, 1, 2]  # the rerun computed nothing
    for a, b, c in zip(mem, disk, again):
        assert a.keys() == b.keys() == c.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype == c[k].dtype and a[k].tobytes() == b[k].tobytes() == c[k].tobytes()
    assert disk[0]["bf16"].dtype == np.float32 and disk[0]["bf16"][0] == float(jnp.bfloat16(1 / 3))
    assert [unpad_row(r) for r in disk[0]["ids"]] == [[1, 7], [3]] and as_texts(disk[1]["texts"]) == ["item 2", "é"]
    with pytest.raises(ValueError, match=r"holds another test \(differs in n\); use a new directory"):
        Work(tmp_path, dict(n=3), what="test")


def test_repetition_killed_and_rerun_gives_identical_results(tmp_path, monkeypatch):
    # two looping inputs built from the pool's own construction (bundled clips only): candidate
    # 10, and the same at half the amplitude (tiny.en loops differently on it)
    monkeypatch.setattr(RP, "CARDS", tmp_path / "no_cards")
    audio = RP.candidate_pool(0)[10]["audio"]
    files = [tmp_path / "loop.wav", tmp_path / "loop_quiet.wav"]
    sf.write(files[0], audio, SAMPLE_RATE, subtype="FLOAT")
    sf.write(files[1], 0.5 * audio, SAMPLE_RATE, subtype="FLOAT")
    child = tmp_path / "child.py"
    child.write_text(REPETITION)
    cmd = lambda name: [sys.executable, child, tmp_path / name, tmp_path / f"{name}.json", *files]  # noqa: E731
    _finish(_start(cmd("whole")))
    first = tmp_path / "killed" / "sweeps" / "chunk_00000.npz"  # the first looping item's sweep
    stamp = _kill_when(first, _start(cmd("killed")))
    assert not (tmp_path / "killed.json").exists()
    _finish(_start(cmd("killed")))
    whole = (tmp_path / "whole.json").read_bytes()
    assert (tmp_path / "killed.json").read_bytes() == whole
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == stamp  # read back, not recomputed
    result = json.loads(whole)
    assert (result["n_loops"], result["n_items"]) == (2, 2) and result["items"][0]["clean"] != result["items"][1]["clean"]

    import jaxasr_interp as jai
    from jaxasr_interp.experiments import repetition as R
    with pytest.raises(ValueError) as err:  # another configuration in the same directory
        R.run(jai.load("tiny.en"), audio=files, alphas=(0.5,), max_new_tokens=24, work_dir=tmp_path / "killed")
    assert re.fullmatch(r".*/killed holds another repetition experiment \(differs in alphas\); "
                        r"use a new directory or delete it", str(err.value))


def test_lens_tables_killed_and_rerun_gives_identical_tables(tmp_path):
    def cmd(name):
        return LENS_TABLES + ["--work", tmp_path / name, "--out", tmp_path / f"{name}.md",
                              "--figures", tmp_path / f"{name}_figures"]

    _finish(_start(cmd("whole")))
    first = tmp_path / "killed" / "tiny.en" / "encoder_lens" / "chunk_00000.npz"
    stamp = _kill_when(first, _start(cmd("killed")))
    assert not (tmp_path / "killed.json").exists()
    _finish(_start(cmd("killed")))
    assert (tmp_path / "killed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
    untimed = lambda name: re.sub(r"\(\d+ s\)", "", (tmp_path / f"{name}.md").read_text())  # noqa: E731
    assert untimed("killed") == untimed("whole")
    assert (first.stat().st_mtime_ns, first.stat().st_ino) == stamp
    assert sorted(p.name for p in (tmp_path / "killed_figures").iterdir()) == [
        "encoder_lens_tiny.en.png", "logit_lens_tiny.en.png", "saturation.png"]
