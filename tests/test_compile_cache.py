"""The persistent compilation cache: importing the library changes no JAX setting; enabling it
fills a folder under the user's cache directory (or ``$JAXASR_INTERP_CACHE``, or the argument)
that a second process then loads from instead of compiling; ``JAXASR_INTERP_CACHE=off`` leaves
it off; the command line turns it on. Each run is a fresh subprocess (the cache is per process
state in JAX)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = r"""
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
import jaxasr_interp as jai
before = jax.config.jax_compilation_cache_dir
arg = sys.argv[1] if len(sys.argv) > 1 else None
folder = jai.enable_compilation_cache(arg, min_compile_time_secs=0)
jax.jit(lambda x: jnp.tanh(x @ x.T) + 1.0)(jnp.ones((7, 5))).block_until_ready()
print(json.dumps({"before": before, "folder": None if folder is None else str(folder),
                  "config": jax.config.jax_compilation_cache_dir,
                  "hits": events.count("/jax/compilation_cache/cache_hits")}))
"""


def run_child(tmp_path, *args, **env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "JAXASR_INTERP_CACHE")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu", **env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def entries(folder: Path) -> set:
    return {p.name for p in folder.iterdir() if p.name.endswith("-cache")} if folder.exists() else set()


def test_a_second_process_loads_what_the_first_compiled(tmp_path):
    default = tmp_path / "xdg" / "jaxasr-interp" / "jax"
    first = run_child(tmp_path)
    assert first["before"] is None  # importing jaxasr_interp set nothing
    assert first["folder"] == first["config"] == str(default)
    written = entries(default)
    assert written and first["hits"] == 0
    second = run_child(tmp_path)
    assert second["hits"] >= 1 and entries(default) == written  # loaded, nothing recompiled


def test_the_env_var_and_the_argument_choose_the_folder(tmp_path):
    by_env = run_child(tmp_path, JAXASR_INTERP_CACHE=str(tmp_path / "env"))
    assert by_env["folder"] == str(tmp_path / "env") and entries(tmp_path / "env")
    by_arg = run_child(tmp_path, tmp_path / "arg", JAXASR_INTERP_CACHE=str(tmp_path / "env"))
    assert by_arg["folder"] == str(tmp_path / "arg") and entries(tmp_path / "arg")


@pytest.mark.parametrize("value", ["off", "0"])
def test_off_leaves_the_cache_off(tmp_path, value):
    got = run_child(tmp_path, JAXASR_INTERP_CACHE=value)
    assert got["folder"] is None and got["config"] is None
    assert not (tmp_path / "xdg").exists()


def test_the_command_line_enables_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAXASR_INTERP_CACHE"}
    env.update(JAXASR_INTERP_CACHE=str(tmp_path / "cli"), JAX_PLATFORMS="cpu")
    code = ("import jax, sys; from jaxasr_interp.cli.main import main; "
            "main(['transcribe', '/nonexistent.wav']); print(jax.config.jax_compilation_cache_dir)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "cli"), out.stderr[-2000:]
