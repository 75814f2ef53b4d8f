"""Gender and accent datasets drawn across synthesis engines (format: :mod:`jaxasr_interp.data`).

``build_gender_engines`` / ``build_accent_engines(out, n_per_class, *, engines=None, seed=0,
real=False)`` write a dataset whose ``labels.csv`` has, besides the target, the columns
``engine``, ``voice``, ``speaker``, ``gender`` and ``accent`` of every item, so that
:mod:`.splits` can hold out one engine (or speaker) at a time. Labels are the voice cards'
(:data:`.engines.VOICES`). Item ``i`` gets class ``i % n_classes``; within a class the engines
that have a voice of it take turns, and the voice within an engine, the sentence, the speaking
rate (``stretch`` in 0.85-1.2) and espeak-ng's pitch are drawn from the seed's generator.

Defaults: gender uses every installed engine with voices of both genders (espeak-ng, flite,
festival; piper's one voice is male, so it joins only when named: a piper item would always be
male); accent uses every installed engine and every accent among their voices (us, gb-rp,
scottish, caribbean; gb-rp and caribbean are espeak-ng's only). ``real=True`` appends the real
recordings whose label is documented (:mod:`.real`: JFK, male, us) with ``engine`` "real";
they are extra items, outside the balance.
"""

from __future__ import annotations

import numpy as np

from jaxasr_interp.data import engines as E
from jaxasr_interp.data import real as R
from jaxasr_interp.data import synth
from jaxasr_interp.data.builders import ACCENTS, _prepare, _save

COLUMNS = ("engine", "voice", "speaker", "gender", "accent")


def _pools(voices, column: str, classes) -> dict:
    """class -> engine -> voices, engines in registry order, empty pools dropped."""
    pools = {c: {} for c in classes}
    for v in voices:
        if getattr(v, column) in pools:
            pools[getattr(v, column)].setdefault(v.engine, []).append(v)
    missing = [c for c, p in pools.items() if not p]
    if missing:
        raise ValueError(f"no installed voice of {column} {', '.join(missing)} in the chosen engines; "
                         f"voices: {', '.join(sorted({f'{v.engine}:{v.voice}' for v in voices}))}")
    return pools


def _synthesize(root, column, classes, pools, n_per_class, rng) -> list[dict]:
    items, k = [], len(classes)
    for i, text in enumerate(synth.sentences(rng, k * n_per_class)):
        pool = pools[classes[i % k]]
        engine = list(pool)[(i // k) % len(pool)]
        voice = pool[engine][int(rng.integers(len(pool[engine])))]
        stretch, pitch = float(rng.uniform(0.85, 1.2)), int(rng.integers(30, 70))
        audio = E.speak(voice, text, stretch=stretch, pitch=pitch)
        items.append(dict(path=_save(root, i, audio), transcript=text, source=E.describe(voice, stretch, pitch),
                          **{c: getattr(voice, c) for c in COLUMNS}))
    return items


def _real_items(root, column, classes, start: int) -> list[dict]:
    items = []
    for j, clip in enumerate(R.labelled(column, classes)):
        items.append(dict(path=_save(root, start + j, R.load(clip)), transcript=clip.transcript,
                          source=f"real: {clip.name} ({clip.note})", engine="real", voice=clip.name,
                          **clip.labels()))
    return items


def _build(out, column, classes, voices, n_per_class, seed, real, name) -> dict:
    from jaxasr_interp.data import write_dataset
    root, rng = _prepare(out, n_per_class), np.random.default_rng(seed)
    pools = _pools(voices, column, classes)
    items = _synthesize(root, column, classes, pools, n_per_class, rng)
    if real:
        items += _real_items(root, column, classes, len(items))
    engines = [e for e in (*E.ENGINES, "real") if any(it["engine"] == e for it in items)]
    return write_dataset(root, items, name=name, seed=seed, classes={column: list(classes), "engine": engines},
                         label_source=f"synthesized: {column} declared by each voice's card "
                                      "(jaxasr_interp.data.engines.VOICES)"
                                      + ("; real: documented speakers only (jaxasr_interp.data.real)" if real else ""),
                         params=dict(n_per_class=n_per_class, engines=sorted({v.engine for v in voices}),
                                     classes=list(classes), real=real))


def _voices(engines) -> list:
    """The installed voices of ``engines``; a named engine that is not installed is an error."""
    for e in engines or ():
        E.require(e)
    return E.installed_voices(E.ENGINES if engines is None else tuple(engines))


def build_gender_engines(out, n_per_class: int = 200, *, engines=None, seed: int = 0, real: bool = False) -> dict:
    classes = ["male", "female"]
    voices = _voices(engines)
    if engines is None:  # engines with voices of both genders only (module docstring)
        both = {e for e in E.ENGINES if {v.gender for v in voices if v.engine == e} >= set(classes)}
        voices = [v for v in voices if v.engine in both]
    return _build(out, "gender", classes, voices, n_per_class, seed, real, "gender-engines")


def build_accent_engines(out, n_per_class: int = 100, *, engines=None, accents=None, seed: int = 0,
                         real: bool = False) -> dict:
    voices = _voices(engines)
    classes = list(accents) if accents is not None else [a for a in ACCENTS if any(v.accent == a for v in voices)]
    return _build(out, "accent", classes, voices, n_per_class, seed, real, "accent-engines")
