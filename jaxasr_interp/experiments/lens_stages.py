"""Lens results as the flat arrays a checkpointed stage saves (:mod:`.stages`), and back:
used by ``scripts/lens_tables.py`` and ``scripts/tuned_lens_table.py`` so that each lens run
is one resumable chunk. Unpacking gives the same values, dtypes and text as the run returned.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxasr_interp.experiments.stages import as_texts, unpad_row
from jaxasr_interp.lenses.encoder import EncoderLens
from jaxasr_interp.lenses.logit import LogitLens

_TEXT = ("final", "reference")  # one string per utterance
_ARRAYS = tuple(f.name for f in dataclasses.fields(EncoderLens)
                if f.name not in _TEXT + ("transcripts", "token_ids", "ln_post"))


def pack_encoder_lens(lenses: list[EncoderLens]) -> dict:
    """A list of :class:`EncoderLens` (one per utterance) -> a flat dict of arrays."""
    n_tokens = max((len(ids) for x in lenses for ids in x.token_ids), default=0)
    ids = np.full((len(lenses), len(lenses[0].token_ids) if lenses else 0, n_tokens), -1, np.int64)
    for i, x in enumerate(lenses):
        for layer, row in enumerate(x.token_ids):
            ids[i, layer, :len(row)] = row
    out = dict(transcripts=np.asarray([x.transcripts for x in lenses], dtype=np.str_), token_ids=ids,
               ln_post=np.asarray([x.ln_post for x in lenses], bool))
    out.update({k: np.asarray([getattr(x, k) for x in lenses], dtype=np.str_) for k in _TEXT})
    out.update({k: np.stack([getattr(x, k) for x in lenses]) for k in _ARRAYS})
    return out


def unpack_encoder_lens(arrays: dict) -> list[EncoderLens]:
    """The inverse of :func:`pack_encoder_lens`."""
    return [EncoderLens(transcripts=as_texts(arrays["transcripts"][i]),
                        token_ids=[unpad_row(r) for r in arrays["token_ids"][i]],
                        ln_post=bool(arrays["ln_post"][i]),
                        **{k: str(arrays[k][i]) for k in _TEXT}, **{k: arrays[k][i] for k in _ARRAYS})
            for i in range(len(arrays["ln_post"]))]


def pack_logit_lens(lens: LogitLens) -> dict:
    """A :class:`LogitLens` -> a flat dict of arrays."""
    out = {f.name: getattr(lens, f.name) for f in dataclasses.fields(LogitLens)}
    return {**out, "sites": np.asarray(lens.sites, dtype=np.str_)}


def unpack_logit_lens(arrays: dict) -> LogitLens:
    """The inverse of :func:`pack_logit_lens` (extra keys are ignored)."""
    fields = {f.name: arrays[f.name] for f in dataclasses.fields(LogitLens)}
    return LogitLens(**{**fields, "sites": tuple(as_texts(arrays["sites"]))})
