"""Compile once per machine, not once per run: JAX's persistent compilation cache.

:func:`enable_compilation_cache` points JAX at a folder where every compiled program that took
at least ``min_compile_time_secs`` to compile is written, keyed by the program, the compile
options and the JAX / jaxlib versions; a later process that compiles the same program loads it
from there instead. The ``jaxasr-interp`` command line calls it at start; importing the library
never does (no global state changes at import: a library user calls it).

Where the cache lives (first that applies):

1. the ``path`` argument;
2. ``$JAXASR_INTERP_CACHE`` (a folder);
3. a folder JAX was already given (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``);
4. ``$XDG_CACHE_HOME/jaxasr-interp/jax``, else ``~/.cache/jaxasr-interp/jax``.

``JAXASR_INTERP_CACHE=off`` (or ``0``, ``false``, ``no``, ``none``), or ``path="off"``, leaves
JAX's configuration as it is (no cache unless JAX was given one). The folder is safe to
delete between runs (the next run only compiles again); it is capped at ``max_size_bytes``,
least recently used entries evicted first. As JAX warns, a compilation cache is trusted code:
do not point it at a folder others can write to.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

ENV = "JAXASR_INTERP_CACHE"
OFF = ("off", "0", "false", "no", "none")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxasr-interp/jax`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxasr-interp" / "jax"


def cache_dir(path=None) -> Path | None:
    """The folder :func:`enable_compilation_cache` would use (module docstring), or None
    when the cache is switched off."""
    import jax

    chosen = path if path is not None else os.environ.get(ENV)
    if chosen is not None and str(chosen).strip().lower() in OFF + ("",):
        return None
    if chosen is None:
        chosen = jax.config.jax_compilation_cache_dir or default_cache_dir()
    return Path(chosen).expanduser()


def enable_compilation_cache(path=None, *, min_compile_time_secs: float = 0.2,
                             max_size_bytes: int = 4 * 2**30) -> Path | None:
    """Turn on JAX's persistent compilation cache (see the module docstring for where) ->
    the folder used, or None when switched off or the folder cannot be created (a warning
    then, never an error). Programs compiling in under ``min_compile_time_secs`` are not
    written (they cost less to compile than to load). Safe to call again: a call with the same
    folder changes nothing; a new folder takes effect for the next compilation."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    folder = cache_dir(path)
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warnings.warn(f"compilation cache disabled: cannot create {folder} ({e}); set {ENV} to "
                      "a writable folder or to off", stacklevel=2)
        return None
    try:
        import filelock  # noqa: F401  (JAX needs it to evict entries beyond max_size_bytes)
    except ImportError:
        max_size_bytes = -1
    settings = {"jax_compilation_cache_dir": str(folder),
                "jax_persistent_cache_min_compile_time_secs": float(min_compile_time_secs),
                "jax_persistent_cache_min_entry_size_bytes": -1,  # no size floor
                "jax_compilation_cache_max_size": int(max_size_bytes)}
    if all(getattr(jax.config, k) == v for k, v in settings.items()):
        return folder
    for key, value in settings.items():
        jax.config.update(key, value)
    compilation_cache.reset_cache()  # so that a process that already compiled picks it up
    return folder
