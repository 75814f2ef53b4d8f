"""Every ``--help`` page of the command line, every option's help and default, and ``--version``.

The commands are discovered from the parser (every subcommand at every depth), so a command
added later is covered without touching this file.
"""

import argparse
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from jaxasr_interp.cli.main import build_parser, main, package_version

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def commands(parser=None, path=()):
    """(argv prefix, parser) of the root and of every subcommand, depth first."""
    parser = parser or build_parser()
    yield path, parser
    for name, sub in _subparsers(parser):
        yield from commands(sub, path + (name,))


COMMANDS = list(commands())
IDS = [" ".join(path) or "jaxasr-interp" for path, _ in COMMANDS]


def squeeze(text: str) -> str:
    return "".join(text.split())  # help wraps lines (even inside long defaults)


def test_the_walk_finds_every_command_and_experiment():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"transcribe", "convert", "logit-lens", "encoder-lens", "patch", "probe", "report",
            "experiment", "experiment repetition", "experiment contextual-bias",
            "experiment probe-gender", "experiment probe-hallucination", "experiment attention-window",
            "experiment alignment-heads", "sae", "sae train", "sae inspect"} <= names
    assert len(names) >= 21  # the root, 9 commands, 9 experiments, 2 sae subcommands (today)


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=IDS)
def test_every_help_page_exits_0_and_prints_usage(path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*path, "--help"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    assert out.startswith(f"usage: {' '.join(('jaxasr-interp',) + path)}") and err == ""


def test_experiment_help_in_a_fresh_process():
    # the page that crashed: a '%' from a probe's paper result in a help string
    proc = subprocess.run([sys.executable, "-m", "jaxasr_interp.cli", "experiment", "--help"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: jaxasr-interp experiment") and "94.6% at encoder" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("path, parser", COMMANDS, ids=IDS)
def test_every_option_has_help_and_shows_its_default(path, parser):
    page = squeeze(parser.format_help())
    for action in parser._actions:
        if not action.option_strings:
            continue
        assert action.help and action.help != argparse.SUPPRESS and action.help.strip(), action.option_strings
        takes_value = action.nargs != 0
        if takes_value and action.default is not None and action.default is not argparse.SUPPRESS:
            assert squeeze(f"(default: {action.default})") in page, (path, action.option_strings)
    assert "(default:None)" not in page and "(default:False)" not in page  # nothing to show there


def test_defaults_are_shown_with_their_values():
    page = squeeze(dict(COMMANDS)[("transcribe",)].format_help())
    assert "utterancespercompiledbatch(default:8)" in page
    assert "modelnameorpath(default:tiny.en)" in page
    assert "(default:txt)" in page and "(default:tiny.en)(default" not in page  # shown once


def pyproject_version() -> str:
    return re.search(r'^version\s*=\s*"([^"]+)"', PYPROJECT.read_text(), re.M).group(1)


def test_version_prints_the_package_version():
    proc = subprocess.run([sys.executable, "-m", "jaxasr_interp.cli", "--version"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"jaxasr-interp {metadata.version('jaxasr-interp')}\n"
    assert proc.stdout == f"jaxasr-interp {pyproject_version()}\n"  # the install is this checkout


def test_version_prefers_metadata_and_falls_back_to_pyproject(monkeypatch, capsys):
    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7")
    assert package_version() == "9.8.7"

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert package_version() == pyproject_version() != "9.8.7"
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out == f"jaxasr-interp {pyproject_version()}\n"
