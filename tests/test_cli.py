"""The command line: transcription of real speech (printed and written to files), conversion,
one-line errors, and no library banners. Help pages and --version: test_cli_help.py."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

import jaxasr_interp as jai
from jaxasr_interp.cli.main import main
from jaxasr_interp.weights import load_weights
from jaxasr_interp.whisper.text_metrics import normalize, word_errors

JFK = str(jai.sample_path("jfk.wav"))


def run(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "jaxasr_interp.cli", *args], capture_output=True,
                          text=True, timeout=600, **kwargs)


def test_transcribe_prints_the_known_text_as_json():
    proc = run("transcribe", str(jai.sample_path("jfk.wav")), "--json")
    assert proc.returncode == 0, proc.stderr
    [item] = json.loads(proc.stdout)
    assert item["text"].startswith("And so my fellow Americans")
    assert item["text"].endswith("what you can do for your country.")


def test_output_dir_writes_one_file_per_input_named_after_the_audio(tmp_path, capsys):
    out = tmp_path / "new" / "dir"  # created, parents too
    assert main(["transcribe", JFK, "--output-dir", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert [p.name for p in out.iterdir()] == ["jfk.txt"]
    text = (out / "jfk.txt").read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 1 and text == text.strip() + "\n"
    assert word_errors(normalize(jai.sample_transcripts()["jfk.wav"]), normalize(text)) == (0, 22)
    assert stdout == f"{JFK}\t{text.strip()}\n"  # what is printed does not change

    assert main(["transcribe", JFK, "--output-dir", str(out), "--output-format", "json"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["jfk.json", "jfk.txt"]
    assert json.loads((out / "jfk.json").read_text(encoding="utf-8")) == {"audio": JFK, "text": text.strip()}


def test_output_dir_problems_are_one_line_errors_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "jfk.wav").write_bytes(open(JFK, "rb").read())
    argv = ["transcribe", JFK, str(tmp_path / "a" / "jfk.wav"), "--model", "no-such-model"]
    assert main(argv + ["--output-dir", str(tmp_path / "out")]) == 2  # both would be out/jfk.txt
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "would both be written to" in err, err
    (tmp_path / "file").write_text("x")
    assert main(argv[:2] + argv[3:] + ["--output-dir", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --output-dir {tmp_path / 'file'} exists and is not a directory", err


def _hide_torch(root):
    """A PYTHONPATH where torch cannot be imported and its metadata is too old for transformers
    (it checks find_spec and the installed version, not the import), as on a machine without it."""
    (root / "torch").mkdir(parents=True)
    (root / "torch" / "__init__.py").write_text("raise ImportError('torch is hidden by this test')\n")
    (root / "torch-1.0.dist-info").mkdir()
    (root / "torch-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 1.0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRANSFORMERS_")}
    return dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")])))


def test_no_pytorch_banner_reaches_the_user_when_torch_is_absent(tmp_path):
    env = _hide_torch(tmp_path / "path")
    control = subprocess.run([sys.executable, "-c", "import transformers"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert "PyTorch was not found" in control.stderr  # the banner the CLI must keep quiet
    # encoder-lens scores with Whisper's text normaliser, which imports transformers
    code = ("import sys; from jaxasr_interp.cli import main; rc = main(sys.argv[1:]); "
            "print('transformers imported:', 'transformers' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "encoder-lens", JFK, "--out", str(tmp_path / "out"),
                           "--max-new-tokens", "4", "--batch-size", "1"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "transformers imported: True" in proc.stdout
    assert "PyTorch was not found" not in proc.stderr and "[transformers]" not in proc.stderr, proc.stderr


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
