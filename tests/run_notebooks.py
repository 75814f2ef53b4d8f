"""Execute every notebook in ``colab/`` top to bottom (CI step after pytest, not part of it).

Usage: ``python tests/run_notebooks.py [NOTEBOOK.ipynb ...] [--timeout SECONDS]``

Each notebook runs in a fresh Python kernel (nbclient) inside its own temporary working
directory, so files it writes (figures, datasets) never land in the checkout. A cell error or
a cell running past ``--timeout`` fails that notebook; the script prints one line per notebook
and exits non-zero if any failed. The notebooks use the bundled tiny.en, so no network is needed.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

COLAB = Path(__file__).resolve().parent.parent / "colab"


def run_one(path: Path, timeout: int) -> tuple[bool, float, str]:
    """(succeeded, seconds, the error's last line)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nb-{path.stem}-") as work:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": work}})
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError) as e:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the kernel's traceback is coloured
            lines = [line for line in text.splitlines() if line.strip()]
            return False, time.perf_counter() - start, lines[-1] if lines else type(e).__name__
    return True, time.perf_counter() - start, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: colab/*.ipynb")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(COLAB.glob("*.ipynb"))
    if not paths:
        print(f"error: no notebooks in {COLAB}", file=sys.stderr)
        return 2
    failed = 0
    for path in paths:
        ok, seconds, error = run_one(path, args.timeout)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {path.name} ({seconds:.0f} s){': ' + error if error else ''}",
              flush=True)
    print(f"notebooks: {len(paths) - failed} ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
