"""A model family, as the engine sees it: its stacks and its site vocabulary.

A :class:`Family` is data: for each stack (``"encoder"``, ``"decoder"``) the sites it computes
in model order and which of them sit inside the repeated block, a function giving a site's
per-layer shape from the family's dims, and the number of layers of each stack. Everything
generic (unknown names with a did-you-mean, glob patterns, edit resolution, splitting edits
and captures by stack) is written once against it. A new family is one ``Family`` value plus
its block functions (see ``docs/design.md``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

from jaxasr_interp.core import sites as core_sites


@dataclasses.dataclass(frozen=True, eq=False)
class Family:
    """``stacks`` maps each stack to its site names in model order (``"logits"`` belongs to the
    decoder); ``block_sites`` are those computed inside the repeated block (captured and
    edited with a leading layer axis); ``shape(name, dims, n_tokens)`` is a site's per-layer
    shape; ``layers`` maps each stack to ``dims -> number of blocks``; ``audio_sites`` are
    decoder sites whose position axis runs over audio, not tokens (cross-attention k/v)."""

    what: str                                   # "site" / "Qwen2-Audio site": for messages
    stacks: Mapping[str, tuple[str, ...]]
    block_sites: frozenset
    shape_of: Callable[[str, Any, int], tuple]
    layers: Mapping[str, Callable[[Any], int]]
    audio_sites: frozenset = frozenset()

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(s for names in self.stacks.values() for s in names)

    def unknown(self, name: str) -> core_sites.SiteError:
        return core_sites.unknown_site(name, self.sites, self.what)

    def expand(self, patterns: Iterable[str] | str | None) -> tuple[str, ...]:
        return core_sites.expand(patterns, self.sites, self.what)

    def stack_of(self, name: str) -> str:
        for stack, names in self.stacks.items():
            if name in names:
                return stack
        raise self.unknown(name)

    def shape(self, name: str, dims, n_tokens: int) -> tuple[int, ...]:
        """Per-layer shape of a site's value (no layer axis) for ``n_tokens`` tokens."""
        self.stack_of(name)
        return tuple(self.shape_of(name, dims, n_tokens))

    def n_layers(self, name: str, dims) -> int | None:
        """Layers of a block site (the leading axis of its captures and edits), None otherwise."""
        return self.layers[self.stack_of(name)](dims) if name in self.block_sites else None

    def position_axis(self, name: str, dims) -> int:
        """The token axis of an edit's arrays at a decoder site (layer axis counted)."""
        return core_sites.axes(name).index("pos") + (self.n_layers(name, dims) is not None)

    def own(self, stack: str, edits: Mapping | None, capture) -> tuple[dict, tuple]:
        """The edits and (expanded) captures that name ``stack``; every edit name is checked
        against the whole vocabulary first, so a typo is an error wherever it is passed."""
        for name in edits or {}:
            if name not in self.sites:
                raise self.unknown(name)
        mine = self.stacks[stack]
        return ({k: v for k, v in (edits or {}).items() if k in mine},
                tuple(c for c in self.expand(capture) if c in mine))
