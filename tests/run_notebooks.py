"""Check the Colab notebooks' setup cell, then execute every notebook in ``colab/`` top to bottom
(CI step after pytest, not part of it).

Usage: ``python tests/run_notebooks.py [NOTEBOOK.ipynb ...] [--timeout SECONDS]
[--install-check run|skip|only]``

1. The install check (``--install-check run``, the default; ``only`` runs nothing else). The
   notebooks' first code cell installs the package; every notebook must hold the same one. It
   is run as a plain script, outside the checkout, the way a fresh Colab runtime runs it:
   the repository's wheel is built (``pip wheel --no-deps --no-build-isolation`` of a copy of
   the checkout, so nothing is downloaded and nothing is written into it), a fresh venv is made
   with ``--system-site-packages`` (jax, transformers, the bundled weights come from this
   environment instead of being downloaded again; pip runs with ``PIP_NO_INDEX=1``), and the
   cell runs in it with ``JAXASR_INTERP_SOURCE`` set to the wheel's path. It must install that
   wheel into the venv (even though this environment's own copy is visible there), after which
   ``import jaxasr_interp; jaxasr_interp.load("tiny.en")`` must import the venv's copy and load;
   run again, it must install nothing. In a bare venv (no site packages) with the variable unset
   the cell must stop with its one-line RuntimeError naming ``JAXASR_INTERP_SOURCE``.
2. Each notebook runs in a fresh Python kernel (nbclient) inside its own temporary working
   directory, so files it writes (figures, datasets) never land in the checkout. The kernel
   imports this checkout (``PYTHONPATH``) and is told the notebook's path (``JPY_SESSION_NAME``,
   as Jupyter does), so the setup cell finds the clone already importable and must install
   nothing. A cell error (the notebooks assert their key results), a cell running past
   ``--timeout``, or a setup cell that installed something fails that notebook.

One line per check and notebook; the exit status is non-zero if any failed. The notebooks use
the bundled tiny.en, so no network is needed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLAB = ROOT / "colab"
SETUP_MARK = 'JAXASR_INTERP_SOURCE = ""'   # the line that identifies the setup cell
NOTHING_TO_INSTALL = "nothing to install"   # what the setup cell prints when it installs nothing
NO_SOURCE_ERROR = "RuntimeError: jaxasr-interp is not installed"
# Left out of the copy the wheel is built from (at the top level; __pycache__ and *.egg-info
# anywhere).
SKIP_TOP = {".git", ".venv", "venv", "build", "dist", ".pytest_cache", ".benchmarks", "out", "runs"}


def setup_cell(path: Path) -> str:
    """The source of the notebook's setup cell (its first code cell, which sets the source)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if not code or SETUP_MARK not in code[0].source:
        raise ValueError(f"{path.name}: the first code cell does not set {SETUP_MARK.split()[0]}")
    return code[0].source


def _text(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def run_one(path: Path, timeout: int) -> tuple[bool, float, str]:
    """(succeeded, seconds, the error's last line)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    pythonpath = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, JPY_SESSION_NAME=str(path.resolve()),
               PYTHONPATH=os.pathsep.join(pythonpath))
    env.pop("JAXASR_INTERP_SOURCE", None)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"nb-{path.stem}-") as work:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": work}})
        try:
            client.execute(env=env)
        except (CellExecutionError, CellTimeoutError) as e:
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))  # the kernel's traceback is coloured
            lines = [line for line in text.splitlines() if line.strip()]
            return False, time.perf_counter() - start, lines[-1] if lines else type(e).__name__
    setup = next(cell for cell in nb.cells if cell.cell_type == "code")
    said = _text(setup.outputs).strip()
    if NOTHING_TO_INSTALL not in said:
        return (False, time.perf_counter() - start,
                f"the setup cell did not find the checkout importable: {said!r}")
    return True, time.perf_counter() - start, ""


def _run(cmd, *, timeout: int, **kwargs) -> str:
    """Run cmd; its stdout + stderr, or RuntimeError with the last line of its output."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        lines = [line for line in out.splitlines() if line.strip()]
        raise RuntimeError(f"{Path(str(cmd[0])).name} {' '.join(map(str, cmd[1:3]))} ... exited "
                           f"{proc.returncode}: {lines[-1] if lines else ''}")
    return out


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
    if Path(folder).resolve() == ROOT:
        skip |= SKIP_TOP & set(names)
    return skip


def install_check(timeout: int = 300) -> tuple[bool, float, str]:
    """(succeeded, seconds, what failed): the setup cell installs the wheel in a fresh venv
    (module docstring)."""
    start = time.perf_counter()
    try:
        cells = {path.name: setup_cell(path) for path in sorted(COLAB.glob("*.ipynb"))}
        if len(set(cells.values())) != 1:
            first = next(iter(cells))
            differ = [name for name, cell in cells.items() if cell != cells[first]]
            raise RuntimeError(f"the setup cell of {', '.join(differ)} differs from {first}'s")
        cell = next(iter(cells.values()))
        with tempfile.TemporaryDirectory(prefix="nb-install-") as tmp:
            tmp = Path(tmp).resolve()
            if tmp.is_relative_to(ROOT):
                raise RuntimeError(f"the temporary directory {tmp} is inside the checkout")
            src, wheels, work = tmp / "src", tmp / "wheels", tmp / "work"
            shutil.copytree(ROOT, src, ignore=_ignore)
            work.mkdir()
            _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", wheels, src], timeout=timeout)
            wheel, = wheels.glob("jaxasr_interp-*.whl")
            shutil.rmtree(src)   # the wheel is all that is left of the checkout
            script = work / "setup_cell.py"
            script.write_text(cell)
            bindir = "Scripts" if os.name == "nt" else "bin"
            drop = ("PYTHONPATH", "JPY_SESSION_NAME", "VIRTUAL_ENV", "JAXASR_INTERP_SOURCE")
            env = {k: v for k, v in os.environ.items() if k not in drop}
            env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

            # A fresh venv that sees this environment's packages, and the cell pointed at the wheel.
            venv = tmp / "venv"
            _run([sys.executable, "-m", "venv", "--system-site-packages", venv], timeout=timeout)
            python = venv / bindir / "python"
            with_source = dict(env, JAXASR_INTERP_SOURCE=str(wheel))
            said = _run([python, script], cwd=work, env=with_source, timeout=timeout)
            if "pip install" not in said or "jaxasr-interp: installed" not in said:
                raise RuntimeError(f"the setup cell did not install the wheel into the venv: "
                                   f"{said.strip()!r}")
            said = _run([python, script], cwd=work, env=with_source, timeout=timeout)
            if NOTHING_TO_INSTALL not in said:
                raise RuntimeError(f"run again, the setup cell did not find the wheel installed: "
                                   f"{said.strip()!r}")
            said = _run([python, "-c", (
                "import sys, jaxasr_interp; from pathlib import Path\n"
                "where = Path(jaxasr_interp.__file__).resolve()\n"
                "assert where.is_relative_to(Path(sys.prefix).resolve()), f'imported {where}'\n"
                "model = jaxasr_interp.load('tiny.en')\n"
                "assert jaxasr_interp.sample_path('jfk.wav').is_file(), 'no samples in the wheel'\n"
                "print('loaded', model.dims.n_audio_layer, 'encoder layers from', where)")],
                cwd=work, env=env, timeout=timeout)
            if "loaded" not in said:
                raise RuntimeError(f"import and load in the venv: {said.strip()!r}")

            # A bare venv: nothing installed, no source -> the cell's one-line error.
            bare = tmp / "bare"
            _run([sys.executable, "-m", "venv", "--without-pip", bare], timeout=timeout)
            proc = subprocess.run([str(bare / bindir / "python"), str(script)], cwd=work, env=env,
                                  capture_output=True, text=True, timeout=timeout)
            last = ([line for line in proc.stderr.splitlines() if line.strip()] or [""])[-1]
            if (proc.returncode == 0 or not last.startswith(NO_SOURCE_ERROR)
                    or "set JAXASR_INTERP_SOURCE" not in last):
                raise RuntimeError(f"with no source and nothing installed the setup cell said "
                                   f"{last!r}")
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        return False, time.perf_counter() - start, str(e)
    return True, time.perf_counter() - start, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: colab/*.ipynb")
    parser.add_argument("--timeout", type=int, default=300, help="seconds allowed per cell")
    parser.add_argument("--install-check", choices=("run", "skip", "only"), default="run",
                        help="the setup cell installing the wheel in a fresh venv (default: run)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(COLAB.glob("*.ipynb"))
    if not paths:
        print(f"error: no notebooks in {COLAB}", file=sys.stderr)
        return 2
    checks = []
    if args.install_check != "skip":
        checks.append(("setup cell: the wheel into a fresh venv",
                       lambda: install_check(args.timeout)))
    if args.install_check != "only":
        checks += [(path.name, lambda path=path: run_one(path, args.timeout)) for path in paths]
    failed = 0
    for name, check in checks:
        ok, seconds, error = check()
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name} ({seconds:.0f} s){': ' + error if error else ''}",
              flush=True)
    print(f"notebooks: {len(checks) - failed} ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
