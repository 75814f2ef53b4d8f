"""The command line: transcription of real speech, conversion, and one-line errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import jaxasr_interp as jai
from jaxasr_interp.cli.main import main
from jaxasr_interp.weights import load_weights


def run(*args):
    return subprocess.run([sys.executable, "-m", "jaxasr_interp.cli.main", *args], capture_output=True,
                          text=True, timeout=600)


def test_transcribe_prints_the_known_text_as_json():
    proc = run("transcribe", str(jai.sample_path("jfk.wav")), "--json")
    assert proc.returncode == 0, proc.stderr
    [item] = json.loads(proc.stdout)
    assert item["text"].startswith("And so my fellow Americans")
    assert item["text"].endswith("what you can do for your country.")


def test_help_on_every_command():
    for args in (["--help"], ["transcribe", "--help"], ["convert", "--help"]):
        proc = run(*args)
        assert proc.returncode == 0 and "usage: jaxasr-interp" in proc.stdout


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.wav", "not found"),
    (lambda d: (d / "notes.wav").write_text("not audio") and d / "notes.wav", "cannot read"),
    (lambda d: sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000) or d / "empty.wav", "no samples"),
])
def test_bad_audio_is_a_one_line_error(tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["transcribe", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_unknown_model_is_a_one_line_error(capsys):
    assert main(["transcribe", str(jai.sample_path("jfk.wav")), "--model", "tiny.xx"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model 'tiny.xx'") and "\n" not in err


def test_convert_then_load_gives_identical_params(tmp_path):
    for fmt in ("orbax", "hf"):
        out = tmp_path / fmt
        assert main(["convert", "tiny.en", str(out), "--format", fmt]) == 0
        a, b = load_weights("tiny.en"), load_weights(str(out))
        assert a.dims == b.dims
        flat_a = jax_leaves(a.params)
        flat_b = jax_leaves(b.params)
        assert len(flat_a) == len(flat_b) and all(np.array_equal(x, y) for x, y in zip(flat_a, flat_b))
        assert b.tokenizer_file is not None
    assert main(["convert", "tiny.en", str(tmp_path / "hf")]) == 2  # not empty, no --overwrite


def jax_leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
