"""``experiment all``: runs each step's command with its config, skips a finished step on
rerun, reruns a step whose config changed or that was interrupted, refuses unknown steps and a
missing configs folder with one line."""

import importlib
import importlib.util
import json
from pathlib import Path

import pytest

from jaxasr_interp.experiments import all as A


@pytest.fixture
def fake(monkeypatch, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "fake.json").write_text(json.dumps({"n": 3}))
    step = A.Step("helpers.fake_step", "fake_{model}.json", "fake.json", A._with_config)
    monkeypatch.setattr(A, "STEPS", {"fake": step})
    return tmp_path / "out", configs


def calls(out):
    return len((out / "calls.txt").read_text())


def test_runs_then_skips_then_reruns_on_a_changed_config(fake):
    out, configs = fake
    manifest = A.run_all("tiny.en", out, configs=configs, log=lambda *_: None)
    assert json.loads((out / "fake_tiny.en.json").read_text()) == {"n": 3} and calls(out) == 1
    step = manifest["steps"]["fake"]
    assert step["argv"][:2] == ["--config", str(configs / "fake.json")] and step["wall_s"] >= 0
    assert json.loads((out / "all.json").read_text()) == manifest
    A.run_all("tiny.en", out, configs=configs, log=lambda *_: None)
    assert calls(out) == 1  # finished: skipped
    (configs / "fake.json").write_text(json.dumps({"n": 4}))
    A.run_all("tiny.en", out, configs=configs, log=lambda *_: None)
    assert calls(out) == 2 and json.loads((out / "fake_tiny.en.json").read_text()) == {"n": 4}


def test_an_interrupted_step_runs_again(fake):
    out, configs = fake
    out.mkdir()
    (out / "fail").write_text("")
    with pytest.raises(RuntimeError, match="interrupted"):
        A.run_all("tiny.en", out, configs=configs, log=lambda *_: None)
    assert not (out / "all.json").exists()
    (out / "fail").unlink()
    A.run_all("tiny.en", out, configs=configs, log=lambda *_: None)
    assert calls(out) == 2 and (out / "fake_tiny.en.json").is_file()


def test_clear_errors(fake, tmp_path):
    out, configs = fake
    with pytest.raises(ValueError, match="unknown step.*choose from fake"):
        A.run_all("tiny.en", out, only=["nope"], configs=configs)
    with pytest.raises(FileNotFoundError, match="lacks fake.json.*--configs"):
        A.run_all("tiny.en", out, configs=tmp_path / "empty")
    A.run_all("tiny.en", out, configs=configs, log=lambda *_: None)
    with pytest.raises(ValueError, match="holds the reproduction of tiny.en"):
        A.run_all("base", out, configs=configs)


def test_the_real_steps_name_existing_modules_and_configs():
    root = Path(__file__).parents[1] / "configs"
    for name, step in A.STEPS.items():
        assert importlib.util.find_spec(step.module) is not None, name
        assert step.config is None or (root / step.config).is_file(), name
        assert hasattr(importlib.import_module(step.module), "main"), name
