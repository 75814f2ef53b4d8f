"""Sites in general: the error for an unknown name, glob expansion, axis roles, and the Tap.

A model family's vocabulary (which sites exist, their shapes) lives in its own module (see
:mod:`jaxasr_interp.whisper.sites`, :mod:`jaxasr_interp.qwen2_audio.sites`) and is described to
the engine by a :class:`~jaxasr_interp.core.family.Family`. What is here holds for every family:

- a site key names no layer (``"decoder.cross_attn_out"``); for block sites the layer is the
  leading axis of captures and of an edit's data ``[L, ...]``;
- axis roles follow the site's last name part: ``*.pattern`` is ``(head, pos, key)``,
  ``*.q/k/v/z`` are ``(pos, head, feat)``, everything else ``(pos, feat)``.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Iterable, Mapping


class SiteError(KeyError):
    """An unknown site name; the message lists the nearest valid names."""

    def __str__(self):  # KeyError would print the message quoted
        return self.args[0]


def unknown_site(name: str, vocabulary: tuple[str, ...], what: str = "site") -> SiteError:
    """The error for a name outside ``vocabulary``, with the nearest valid names."""
    near = difflib.get_close_matches(name, vocabulary, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}?" if near else f"valid sites: {', '.join(vocabulary)}"
    return SiteError(f"unknown {what} {name!r}; {hint}")


def expand(patterns: Iterable[str] | str | None, vocabulary: tuple[str, ...],
           what: str = "site") -> tuple[str, ...]:
    """Expand names and glob patterns (``"decoder.*_out"``) into site names, in model order."""
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen = set()
    for pattern in patterns:
        matches = fnmatch.filter(vocabulary, pattern)
        if not matches:
            raise unknown_site(pattern, vocabulary, what)
        chosen.update(matches)
    return tuple(s for s in vocabulary if s in chosen)


def axes(name: str) -> tuple[str, ...]:
    """Axis roles of a site's value for one layer: ``pos`` (tokens, or audio positions in the
    encoder and in cross-attention keys/values), ``head``, ``key`` (attended positions),
    ``feat`` (features)."""
    if name.endswith(".pattern"):
        return ("head", "pos", "key")
    if name.rsplit(".", 1)[-1] in ("q", "k", "v", "z"):
        return ("pos", "head", "feat")
    return ("pos", "feat")


class Tap:
    """Applies edits and records captures at the sites of one stack (or one block).

    A Tap lives only while a function is traced: it is created inside the pure function, its
    ``captured`` dict is returned as data, and nothing outlives the call.
    """

    def __init__(self, prefix: str, edits: Mapping[str, Any] | None, capture: Iterable[str]):
        self.prefix = prefix
        self.edits = edits or {}
        self.capture = frozenset(capture)
        self.captured: dict[str, Any] = {}

    def __call__(self, local: str, value):
        name = f"{self.prefix}.{local}" if self.prefix else local
        edit = self.edits.get(name)
        if edit is not None:
            value = edit.apply(value)
        if name in self.capture:
            self.captured[name] = value
        return value
