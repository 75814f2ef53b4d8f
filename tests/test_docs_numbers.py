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
    """Every number in a JSON document, including those inside strings ("encoder.3"), and the
    length of every list (a count such as "16 pairs" is the length of the pairs listed)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(key)
            yield from _leaves(value)
    elif isinstance(obj, list):
        yield float(len(obj))
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


def _pairs(obj):
    """Every ``[int, int]`` list in a JSON document (a ``[layer, head]``)."""
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list):
        if len(obj) == 2 and all(type(v) is int for v in obj):
            yield tuple(obj)
        for value in obj:
            yield from _pairs(value)


def _lines_with_header(body: str):
    """(line, the header cells of its table if it is a table's data row, else []) for every line
    of a marked block; a block may hold a caption line and several tables."""
    lines, header = body.splitlines(), []
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            yield line, []
        else:
            yield line, (header if line.startswith("|") and not line.startswith("|---") else [])


def test_every_table_number_is_in_its_results_file():
    tables = list(_tables())
    assert tables, "no generated tables in docs/*.md"
    for path, m in tables:
        doc = json.loads((ROOT / m["source"]).read_text())
        values, pairs = set(_leaves(doc)), set(_pairs(doc))
        # the first line is the header row (or a caption), the second is --- (or blank)
        for line, header in list(_lines_with_header(m["body"]))[2:]:
            if "layer.head" in header:  # a head's label "3.1" is the pair [3, 1] in the file, not a number
                cells = line.strip().strip("|").split("|")
                label = cells[header.index("layer.head")].strip()
                assert tuple(map(int, label.split("."))) in pairs, f"{path.name} table {m['name']}: head {label}"
                cells[header.index("layer.head")] = ""
                line = "|".join(cells)
            # "x4" counts of folds that chose a layer are tallies of a list in the file
            for token in NUMBER.findall(re.sub(r" x\d+", "", line)):
                assert _derivable(token, values), f"{path.name} table {m['name']}: {token} not in {m['source']}"


def test_docs_tables_are_regenerated():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:]
