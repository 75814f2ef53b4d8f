"""A stand-in experiment for tests/test_experiment_all.py: writes OUT/fake_MODEL.json and
counts its runs in OUT/calls.txt; ``--fail`` raises after counting (an interrupted step)."""

import argparse
import json
from pathlib import Path


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--config")
    p.add_argument("--model")
    p.add_argument("--out")
    p.add_argument("--work")
    args = p.parse_args(argv)
    out = Path(args.out)
    calls = out / "calls.txt"
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    if (out / "fail").exists():
        raise RuntimeError("interrupted")
    size = json.loads(Path(args.config).read_text())["n"]
    (out / f"fake_{args.model}.json").write_text(json.dumps({"n": size}))
