#!/usr/bin/env bash
# The test command (README "Two commands"; .ci/run calls exactly this): installs what the tests
# need on a fresh machine, runs the suite, then executes the Colab notebooks. Exits non-zero on
# any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
# Debian packages: espeak-ng, flite and festival with three voices synthesize the datasets'
# speech (tests/test_data.py, tests/test_engines.py);
# pocketsphinx-testdata holds LibriVox clips; chromium renders the HTML report headless
# (tests/test_report.py). Installed when apt-get exists (with sudo when not root), after an
# update: a fresh machine's package lists are empty or stale.
if command -v apt-get >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
    pocketsphinx-testdata chromium
fi
# torch==2.13.0 (in the dev extra) resolves to the CPU build.
python3 -m pip install -q -e ".[dev]"
python3 -m pytest -q -n 2 --dist loadfile
# The Colab notebooks, executed top to bottom on tiny.en (any cell error fails).
python3 tests/run_notebooks.py
