"""Every number in a generated docs table comes from the results file its marker names, and
the tables are up to date (``scripts/docs_tables.py --check``)."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- table:(?P<name>\S+) (?P<source>\S+) -->\n(?P<body>.*?)<!-- /table -->", re.S)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _leaves(obj):
    """Every number in a JSON document, including those inside strings ("encoder.3")."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(key)
            yield from _leaves(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _leaves(value)
    elif isinstance(obj, bool):
        return
    elif isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, str):
        yield from (float(t) for t in NUMBER.findall(obj))


def _derivable(token: str, values) -> bool:
    decimals = len(token.split(".")[1]) if "." in token else 0
    target = float(token)
    for v in values:
        for scaled in (v, 100 * v):
            if abs(round(scaled, decimals) - target) < 1e-9:
                return True
    return False


def _tables():
    for path in sorted((ROOT / "docs").glob("*.md")):
        for m in MARKER.finditer(path.read_text()):
            yield path, m


def test_every_table_number_is_in_its_results_file():
    tables = list(_tables())
    assert tables, "no generated tables in docs/*.md"
    for path, m in tables:
        values = set(_leaves(json.loads((ROOT / m["source"]).read_text())))
        for line in m["body"].splitlines()[2:]:  # the header row names columns, the second is ---
            # "x4" counts of folds that chose a layer are tallies of a list in the file
            for token in NUMBER.findall(re.sub(r" x\d+", "", line)):
                assert _derivable(token, values), f"{path.name} table {m['name']}: {token} not in {m['source']}"


def test_docs_tables_are_regenerated():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:]
