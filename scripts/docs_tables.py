"""Regenerate the docs tables from the results files.

A table in ``docs/*.md`` sits between two markers naming its table function and the results
file it is made from::

    <!-- table:probes-summary results/probes_tiny.en.json -->
    | ... generated ... |
    <!-- /table -->

``python scripts/docs_tables.py`` rewrites every marked table from its file;
``--check`` changes nothing and exits 1 (printing a diff) when a table is out of date.
Other experiments register their own tables: ``TABLES[name] = function(results) -> markdown``
(the :func:`table` decorator), or a marker-name prefix in ``MODULE_TABLES`` naming their
module's function; a marker whose name nobody registered is left untouched. ``tests/test_docs_numbers.py`` checks that every number inside a
marked table comes, by rounding, from the file the marker names.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"(<!-- table:(?P<name>\S+) (?P<source>\S+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
TABLES: dict[str, Callable[[dict], str]] = {}
# Experiments that render their own tables: marker-name prefix -> "module:function(results)".
MODULE_TABLES = {"lenses_": "jaxasr_interp.experiments.lenses_report:docs_table",
                 "contextual_bias_": "jaxasr_interp.experiments.contextual_bias_controls_report:docs_table",
                 "sae_study_": "jaxasr_interp.sae.study:markdown",
                 "attention_window_": "jaxasr_interp.experiments.attention_window:markdown",
                 "alignment_heads_": "jaxasr_interp.experiments.alignment_heads:markdown"}


def table(name: str):
    def register(fn):
        TABLES[name] = fn
        return fn
    return register


def pct(iv: dict) -> str:
    """``value [lo, hi]`` in percent (points for a difference), one decimal."""
    return f"{100 * iv['value']:.1f} [{100 * iv['lo']:.1f}, {100 * iv['hi']:.1f}]"


def rows_md(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def _chosen(layers: list[str]) -> str:
    return ", ".join(f"{name} x{k}" for name, k in Counter(layers).most_common())


def _probed(results):
    return [(t, r) for t, r in results["tasks"].items() if "skipped" not in r]


@table("probes-summary")
def probes_summary(results: dict) -> str:
    rows = []
    for task, r in _probed(results):
        b = r["best"]
        rows.append([task, r["n"], ", ".join(f"{c} {k}" for c, k in zip(r["classes"], r["counts"])),
                     f"{100 * r['majority']:.1f}", _chosen(b["layers"]), pct(b["accuracy"]), pct(b["control"]),
                     pct(b["selectivity"]), f"{100 * b['test_selected_accuracy']:.1f}"])
    return rows_md(["task", "n", "classes", "majority %", "layer chosen on inner folds (outer folds)",
                    "accuracy % (95% CI)", "control %", "selectivity, points", "chosen on test folds % (biased)"],
                   rows)


@table("probes-layers")
def probes_layers(results: dict) -> str:
    probed = _probed(results)
    names = [layer["layer"] for layer in probed[0][1]["layers"]]
    rows = [[name] + [pct(r["layers"][i]["accuracy"]) for _, r in probed] for i, name in enumerate(names)]
    return rows_md(["layer"] + [f"{t} (n {r['n']})" for t, r in probed], rows)


@table("probes-held-out")
def probes_held_out(results: dict) -> str:
    rows = []
    for task, r in _probed(results):
        for column, split in r.get("held_out", {}).items():
            parts = split.items() if column == "engine" else [(f"each of {split['folds']} speakers", split)]
            for name, s in parts:
                classes = ", ".join(s.get("classes", r["classes"]))
                rows.append([task, f"{column}: {name}", classes, s["n"], f"{100 * s['majority']:.1f}",
                             _chosen(s["best"]["layers"]), pct(s["best"]["accuracy"]), pct(s["best"]["control"])])
    return rows_md(["task", "held out (tested)", "classes", "n tested", "majority %", "layer chosen on inner folds",
                    "accuracy % (95% CI)", "control %"], rows)


def _nuisance_table(r: dict) -> str:
    nz = r["nuisance"]
    rows = []
    for i, layer in enumerate(r["layers"]):
        rows.append([layer["layer"], pct(layer["accuracy"]), pct(layer["selectivity"])]
                    + [pct(nz[k]["layers"][i]["accuracy"]) for k in ("noise", "rate", "length")])
    rows.append(["majority %", f"{100 * r['majority']:.1f}", "", f"{100 * nz['noise']['majority']:.1f}",
                 f"{100 * nz['rate']['majority']:.1f}", f"{100 * nz['length']['majority']:.1f}"])
    return rows_md(["layer", "correct vs error %", "selectivity, points", "SNR above median %",
                    "rate above median %", "transcript length above median %"], rows)


@table("probes-nuisance")
def probes_nuisance(results: dict) -> str:
    r = results["tasks"].get("hallucination", {})
    return _nuisance_table(r) if "nuisance" in r else "(no hallucination results)\n"


@table("probes-length-matched")
def probes_length_matched(results: dict) -> str:
    """The correct-vs-error probe balanced on transcript length too, its best layer and class means."""
    r = results["tasks"].get("hallucination", {}).get("length_matched")
    if r is None or "nuisance" not in r:
        return "(no length-matched results)\n"
    b, nz = r["best"], r["nuisance"]
    means = lambda key: " / ".join(f"{nz[key]['class_means'][c]:.1f}" for c in ("0", "1"))
    head = rows_md(["n", "classes", "majority %", "layer chosen on inner folds", "accuracy % (95% CI)", "control %",
                    "selectivity, points", "words, correct / error", "SNR dB of noisy items, correct / error",
                    "wpm, correct / error"],
                   [[r["n"], ", ".join(f"{c} {k}" for c, k in zip(r["classes"], r["counts"])),
                     f"{100 * r['majority']:.1f}", _chosen(b["layers"]), pct(b["accuracy"]), pct(b["control"]),
                     pct(b["selectivity"]), means("length"), means("noise"), means("rate")]])
    return head + "\n" + _nuisance_table(r)


def table_function(name: str):
    """The function of a marker name, or None (a marker nobody registered is left as it is)."""
    if name in TABLES:
        return TABLES[name]
    for prefix, target in MODULE_TABLES.items():
        if name.startswith(prefix):
            module, fn = target.split(":")
            return getattr(importlib.import_module(module), fn)
    return None


def render(text: str, root: Path = ROOT) -> str:
    def one(m):
        fn = table_function(m["name"])
        if fn is None:
            return m.group(0)
        table = fn(json.loads((root / m["source"]).read_text()))
        return m.group(1) + table + ("" if table.endswith("\n") else "\n") + m.group(5)
    return MARKER.sub(one, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report out-of-date tables, change nothing")
    p.add_argument("files", nargs="*", help="markdown files (default docs/*.md)")
    args = p.parse_args(argv)
    stale = 0
    for path in [Path(f) for f in args.files] or sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text()
        new = render(text)
        if new == text:
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), new.splitlines(True), str(path), "regenerated"))
        else:
            path.write_text(new)
            print(f"rewrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
