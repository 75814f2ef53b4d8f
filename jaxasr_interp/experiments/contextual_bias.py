"""Contextual bias: where does the context override what was said?

Stimuli (:mod:`..data.minimal_pairs`, or a user's list read by :func:`items_from_file`):
sentences whose context predicts one word while its minimal-pair partner is spoken ("white
lice" spoken where "white rice" is expected), synthesized with espeak-ng (one voice and rate
for all, so the only variable is the sentence) unless the list gives a recording of the
sentence (:func:`stimulus_audio`). Each greedy transcript is *contextual* (the expected word
written, the spoken one not), *correct* (the spoken word written) or *other*.

For every contextual error, each component family is swept towards the white-noise reference
(:func:`.patching.component_sweep`, teacher-forced on the model's own transcript): a patch
*flips* the error when the top-1 token at the error position becomes the first token of the
spoken word. Reported: % of errors flipped per family, layer (and head) and alpha. The best
encoder and the best decoder component are then checked behaviourally: edited greedy decoding
of every error, counted when the transcript holds the spoken word and not the expected one.
Attribution patching (:mod:`..attribution`, metric = spoken-minus-expected logit at the error
position, one backward pass for all families) is compared with the real alpha = 1 sweep by
Spearman rank correlation.

Resumable (:mod:`.stages`): the transcription (per batch of sentences), the sweeps (per
error) and the edited decoding (per error) are checkpointed in ``work_dir`` (default
``out_dir/checkpoints``); a rerun with the same directory and configuration resumes and gives
identical results, another configuration there is a one-line error. Synthesized audio is
cached in ``out_dir/audio`` (each file written whole). Every model call runs in ``dtype`` at
matmul ``precision`` (:mod:`jaxasr_interp.core.dtypes`). Sweeps, attribution and edited
decoding: :mod:`.contextual_bias_sweeps`; the report: :mod:`.contextual_bias_report`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from jaxasr_interp.experiments.contextual_bias_report import PAPER, format_summary, write_report  # noqa: F401
from jaxasr_interp.experiments.contextual_bias_sweeps import behaviour, rank_correlations, setup, sweep_item
from jaxasr_interp.experiments.stages import Work, describe, digest, numerics, transcribe
from jaxasr_interp.patching.decoding import ids_to_text
from jaxasr_interp.whisper.audio import SAMPLE_RATE
from jaxasr_interp.whisper.text_metrics import words

ENCODER_FAMILIES = ("encoder.block", "encoder.attn", "encoder.mlp", "encoder.head")
DECODER_FAMILIES = ("decoder.block", "decoder.self_attn", "decoder.cross_attn", "decoder.mlp")


def items_from_file(path) -> list:
    """A user's sentence list (CSV or ``*.tsv``: ``sentence,spoken,expected[,audio]``) -> the
    stimuli :func:`run` takes; see :func:`..data.minimal_pairs.read_user_list` for the format
    and its one-line errors (file, line number, what is wrong)."""
    from jaxasr_interp.data.minimal_pairs import read_user_list
    return read_user_list(path)


def stimulus_audio(stimuli, out_dir, *, voice: str = "en-us", speed: int = 150) -> list[np.ndarray]:
    """Each stimulus's audio: its own recording (``audio``) where it has one, else espeak-ng
    (:func:`synthesize`; espeak-ng is needed only when some stimulus has no recording)."""
    from jaxasr_interp.whisper.audio import load_audio
    todo = [i for i, s in enumerate(stimuli) if not getattr(s, "audio", "")]
    made = synthesize([stimuli[i] for i in todo], out_dir, voice=voice, speed=speed, indices=todo) if todo else []
    made = dict(zip(todo, made))
    return [made[i] if i in made else load_audio(s.audio) for i, s in enumerate(stimuli)]


def synthesize(stimuli, out_dir, *, voice: str = "en-us", speed: int = 150, indices=None) -> list[np.ndarray]:
    """espeak-ng audio of each sentence, cached as ``out_dir/audio/NNNN_<spoken>.wav``
    (deterministic; NNNN: the sentence's index in its list, ``indices[k]`` if given)."""
    import soundfile as sf

    from jaxasr_interp.whisper.audio import load_audio
    from jaxasr_interp.data import synth
    audio_dir = Path(out_dir) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    indices = range(len(stimuli)) if indices is None else indices
    out = []
    for i, s in zip(indices, tqdm(stimuli, desc="espeak-ng", unit="sentence")):
        path = audio_dir / f"{i:04d}_{s.spoken}.wav"
        if not path.is_file():  # written whole or not at all: a killed run leaves no partial file
            tmp = path.with_suffix(".tmp.wav")
            sf.write(tmp, synth.espeak(s.sentence, voice, speed=speed), SAMPLE_RATE, subtype="PCM_16")
            os.replace(tmp, path)
        out.append(load_audio(path))
    return out


def classify(text: str, stimulus) -> str:
    w = words(text)
    if stimulus.spoken.lower() in w:
        return "correct"
    return "contextual" if stimulus.expected.lower() in w else "other"


def error_position(tokenizer, ids, expected: str) -> int | None:
    """Index in ``ids`` of the token that starts the word ``expected`` (None if absent)."""
    for p in range(len(ids)):
        if p and not tokenizer.decode([ids[p]]).startswith(" "):
            continue
        rest = words(tokenizer.decode(ids[p:]))
        if rest and rest[0] == expected.lower():
            return p
    return None


def _items(model, stimuli, ids, max_items):
    """(stimulus index, ids, error position, spoken first token) of patchable errors."""
    tok, out, ambiguous = model.tokenizer, [], 0
    for i, (s, row) in enumerate(zip(stimuli, ids)):
        if classify(ids_to_text(tok, row), s) != "contextual":
            continue
        p = error_position(tok, row, s.expected)
        spoken = tok.encode(" " + s.spoken)[0]
        if p is None or spoken == row[p]:
            ambiguous += 1  # the two words share their first token: no single-token flip exists
            continue
        out.append((i, row, p, spoken))
    return out[:max_items], ambiguous


def _config(model, num, stimuli, audios, families, alphas, **settings) -> dict:
    """Everything a run's results depend on (its work directory's key)."""
    return dict(experiment="contextual-bias", **describe(model, num), families=list(families),
                alphas={f: list(a) for f, a in alphas.items()}, **settings,
                stimuli=[[s.sentence, s.spoken, s.expected, getattr(s, "audio", "")] for s in stimuli],
                audio_digest=digest(audios))


def run(model, out_dir, *, stimuli=None, families=ENCODER_FAMILIES + DECODER_FAMILIES, alphas=(0.5, 1.0),
        head_alphas=(1.0,), max_items: int = 12, max_new_tokens: int = 40, reference=None,
        voice: str = "en-us", speed: int = 150, chunk: int = 8, attribution: bool = True, work_dir=None,
        dtype=None, precision="highest") -> dict:
    """The whole experiment -> a result dict (see :func:`write_report`). ``work_dir``: the
    checkpoints (default ``out_dir/checkpoints``; module docstring); ``dtype`` / ``precision``:
    of every model call."""
    from jaxasr_interp.data.minimal_pairs import generate
    stimuli = generate() if stimuli is None else stimuli
    tok, num = model.tokenizer, numerics(model, dtype, precision)
    audios = stimulus_audio(stimuli, out_dir, voice=voice, speed=speed)
    alphas = {f: tuple(head_alphas if f.endswith("head") else alphas) for f in families}
    config = _config(model, num, stimuli, audios, families, alphas, max_items=max_items,
                     max_new_tokens=max_new_tokens, reference=None if reference is None else str(reference),
                     voice=voice, speed=speed, chunk=chunk, attribution=attribution)
    work = Work(Path(out_dir) / "checkpoints" if work_dir is None else work_dir, config,
                what="contextual-bias experiment")
    ids = transcribe(work, "transcripts", model, audios, max_new_tokens=max_new_tokens, **num)
    classes = [classify(ids_to_text(tok, row), s) for s, row in zip(stimuli, ids)]
    items, ambiguous = _items(model, stimuli, ids, max_items)
    if not items:
        raise _no_errors(model, classes, ambiguous)
    s = setup(model, families, alphas, reference, max_new_tokens=max_new_tokens, chunk=chunk,
              attribution=attribution, numerics=num)
    parts = work.map("sweeps", lambda it: sweep_item(s, audios[it[0]], *it[1:]), items,
                     key=[[i, p, spoken] for i, _, p, spoken in items])
    rate = {f: np.mean([p[f"flips {f}"] for p in parts], axis=0) for f in families}  # [L, P, A]
    result = dict(model=model.source, n_sentences=len(stimuli), counts={c: classes.count(c) for c in
                  ("contextual", "correct", "other")}, n_ambiguous=ambiguous, n_items=len(items),
                  alphas=alphas, flip_rate=rate, voice=voice, speed=speed,
                  errors=[dict(sentence=stimuli[i].sentence, transcript=ids_to_text(tok, row))
                          for i, row, _, _ in items])
    if attribution:
        result.update(rank_correlations({f: [p[f"grads {f}"] for p in parts] for f in families},
                                        {f: [p[f"effects {f}"] for p in parts] for f in families}, alphas))
    result["behaviour"] = behaviour(s, work, classify, stimuli, audios, items, rate)
    return result


def _no_errors(model, classes: list, ambiguous: int) -> ValueError:
    return ValueError(f"{model.source} made no patchable contextual error on {len(classes)} sentences "
                      f"({classes.count('correct')} correct, {classes.count('other')} other, "
                      f"{classes.count('contextual')} contextual of which {ambiguous} ambiguous)")
