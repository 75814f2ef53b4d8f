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
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep, is_head_family, single_patch_edits
from jaxasr_interp.patching.decoding import ids_to_text
from jaxasr_interp.whisper.audio import SAMPLE_RATE
from jaxasr_interp.whisper.text_metrics import words
from jaxasr_interp.whisper.tokenizer import teacher_tokens

ENCODER_FAMILIES = ("encoder.block", "encoder.attn", "encoder.mlp", "encoder.head")
DECODER_FAMILIES = ("decoder.block", "decoder.self_attn", "decoder.cross_attn", "decoder.mlp")
PAPER = ("large-v3: contextual error on 153/700 TTS sentences; patching encoder components with white "
         "noise raises acoustic accuracy: the bias lives in the encoder (secondary)")


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
        if not path.is_file():
            sf.write(path, synth.espeak(s.sentence, voice, speed=speed), SAMPLE_RATE, subtype="PCM_16")
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


def _sweep_item(model, mel, tokens, pos, spoken, refs, families, alphas, chunk):
    contrast = tokens[1:].at[pos].set(spoken)
    flips, effects = {}, {}
    for fam in families:
        patched, clean = component_sweep(model.params, mel, tokens, refs[fam], jnp.asarray(alphas[fam]), contrast,
                                         dims=model.dims, family=fam, chunk=chunk)
        flips[fam] = np.asarray(patched["top"][..., pos] == spoken)  # [L, P, A]
        diff = patched["contrast_logit"][..., pos] - patched["logit"][..., pos]
        effects[fam] = np.asarray(diff - (clean["contrast_logit"][pos] - clean["logit"][pos]))
    return flips, effects, contrast


def run(model, out_dir, *, stimuli=None, families=ENCODER_FAMILIES + DECODER_FAMILIES, alphas=(0.5, 1.0),
        head_alphas=(1.0,), max_items: int = 12, max_new_tokens: int = 40, reference=None,
        voice: str = "en-us", speed: int = 150, chunk: int = 8, attribution: bool = True) -> dict:
    from jaxasr_interp.whisper.api import transcribe_ids
    from jaxasr_interp.patching.attribution import attribution_patching
    from jaxasr_interp.whisper.audio import load_audio, log_mel
    from jaxasr_interp.data.minimal_pairs import generate
    from jaxasr_interp.whisper.model import decode, encode
    from jaxasr_interp.patching.reference import white_noise
    stimuli = generate() if stimuli is None else stimuli
    dims, tok = model.dims, model.tokenizer
    audios = stimulus_audio(stimuli, out_dir, voice=voice, speed=speed)
    ids = transcribe_ids(model, audios, max_new_tokens=max_new_tokens, progress=True)
    classes = [classify(ids_to_text(tok, row), s) for s, row in zip(stimuli, ids)]
    items, ambiguous = _items(model, stimuli, ids, max_items)
    if not items:
        raise _no_errors(model, classes, ambiguous)
    alphas = {f: tuple(head_alphas if f.endswith("head") else alphas) for f in families}
    noise = white_noise() if reference is None else load_audio(reference)
    noise_mel = log_mel(noise, n_mels=dims.n_mels)
    noise_features, noise_acts = encode(model.params, noise_mel, dims=dims,
                                        capture=[FAMILIES[f] for f in families if f.startswith("encoder")])
    prompt = tok.prompt()
    width = len(prompt) + max_new_tokens + 1  # fixed: one compiled program per family
    flips = {f: [] for f in families}
    effects, grads = {f: [] for f in families}, {f: [] for f in families}
    for i, row, p, spoken in tqdm(items, desc="contextual-bias sweeps", unit="error"):
        tokens = jnp.asarray(teacher_tokens(prompt, row, tok.eot, width), jnp.int32)
        pos = len(prompt) + p - 1  # the position whose next token is the error
        _, dec_acts = decode(model.params, tokens, noise_features, dims=dims,
                             capture=[FAMILIES[f] for f in families if f.startswith("decoder")])
        refs = {f: {**noise_acts, **dec_acts}[FAMILIES[f]] for f in families}
        mel = log_mel(audios[i], n_mels=dims.n_mels)
        f_i, e_i, contrast = _sweep_item(model, mel, tokens, pos, spoken, refs, families, alphas, chunk)
        for f in families:
            flips[f].append(f_i[f])
            effects[f].append(e_i[f])
        if attribution:
            g, _ = attribution_patching(model.params, mel, tokens, refs, jnp.zeros(width - 1).at[pos].set(1.0),
                                        contrast, dims=dims, families=tuple(families), metric="logit_diff")
            for f in families:
                grads[f].append(np.asarray(g[f]))
    rate = {f: np.mean(flips[f], axis=0) for f in families}  # [L, P, A]
    result = dict(model=model.source, n_sentences=len(stimuli), counts={c: classes.count(c) for c in
                  ("contextual", "correct", "other")}, n_ambiguous=ambiguous, n_items=len(items),
                  alphas=alphas, flip_rate=rate, voice=voice, speed=speed,
                  errors=[dict(sentence=stimuli[i].sentence, transcript=ids_to_text(tok, row)) for i, row, _, _ in items])
    if attribution:
        result.update(_rank_correlations(grads, effects, alphas))
    result["behaviour"] = _behaviour(model, stimuli, audios, items, rate, alphas, noise_acts, noise_features,
                                     width, max_new_tokens)
    return result


def _no_errors(model, classes: list, ambiguous: int) -> ValueError:
    return ValueError(f"{model.source} made no patchable contextual error on {len(classes)} sentences "
                      f"({classes.count('correct')} correct, {classes.count('other')} other, "
                      f"{classes.count('contextual')} contextual of which {ambiguous} ambiguous)")


def _rank_correlations(grads: dict, effects: dict, alphas: dict) -> dict:
    """Attribution estimates vs the real alpha = 1 sweep: per family and over all of them."""
    from jaxasr_interp.patching.attribution import rank_correlation
    full = {f: alphas[f].index(1.0) for f in grads if 1.0 in alphas[f]}
    return dict(rank_correlation={f: rank_correlation(np.stack(grads[f]), np.stack(effects[f])[..., a])
                                  for f, a in full.items()},
                rank_correlation_all=rank_correlation(
                    np.concatenate([np.ravel(grads[f]) for f in full]),
                    np.concatenate([np.ravel(np.stack(effects[f])[..., a]) for f, a in full.items()])))


def _best(rate: dict, alphas: dict, stack: str):
    cands = [(float(r.max()), f) for f, r in rate.items() if f.startswith(stack)]
    if not cands:
        return None
    score, fam = max(cands)
    layer, patch, a = np.unravel_index(int(np.argmax(rate[fam])), rate[fam].shape)
    head = int(patch) if is_head_family(fam) else None
    return dict(family=fam, layer=int(layer), head=head, alpha=alphas[fam][int(a)], teacher_forced_flip=score)


def _behaviour(model, stimuli, audios, items, rate, alphas, noise_acts, noise_features, width, max_new_tokens):
    """Edited greedy decoding of every patched error under the best encoder / decoder component."""
    from jaxasr_interp.whisper.api import transcribe_ids
    from jaxasr_interp.whisper.model import decode
    tok, dims, prompt = model.tokenizer, model.dims, model.tokenizer.prompt()
    out = {}
    for stack in ("encoder", "decoder"):
        best = _best(rate, alphas, stack)
        if best is None:
            continue
        texts = []
        for i, row, _, _ in items:
            if stack == "encoder":
                ref = noise_acts[FAMILIES[best["family"]]]
            else:
                tokens = jnp.asarray(teacher_tokens(prompt, row, tok.eot, width), jnp.int32)
                ref = decode(model.params, tokens, noise_features, dims=dims, capture=[FAMILIES[best["family"]]])[1][
                    FAMILIES[best["family"]]]
            edits = single_patch_edits(best["family"], ref, best["layer"], best["alpha"], dims=dims, head=best["head"])
            ids = transcribe_ids(model, [audios[i]], batch_size=1, edits=edits, max_new_tokens=max_new_tokens)[0]
            texts.append(ids_to_text(tok, ids))
        flipped = [classify(t, stimuli[i]) == "correct" for t, (i, _, _, _) in zip(texts, items)]
        out[stack] = dict(best, flipped=float(np.mean(flipped)), transcripts=texts)
    return out


def write_report(result: dict, out_dir) -> dict:
    """contextual_bias.json, contextual_bias.csv (family x layer x head x alpha),
    contextual_bias_layers.png and, with encoder heads, contextual_bias_heads.png."""
    import csv
    import json

    from jaxasr_interp.plots.patching import plot_head_heatmap, plot_layer_lines
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rate, alphas, n = result["flip_rate"], result["alphas"], result["n_items"]
    with open(out / "contextual_bias.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["family", "layer", "head", "alpha", "flipped_fraction", "n_items"])
        for fam, r in rate.items():
            for layer, patch, a in np.ndindex(r.shape):
                w.writerow([fam, layer, patch if is_head_family(fam) else "", alphas[fam][a], f"{r[layer, patch, a]:.4f}", n])
    per_layer = {f: 100 * r.max(axis=(1, 2)) for f, r in rate.items()}  # best head / alpha per layer
    summary = {k: v for k, v in result.items() if k != "flip_rate"}
    summary.update(per_layer_flipped_pct={f: v.tolist() for f, v in per_layer.items()}, paper=PAPER,
                   best={s: _best(rate, alphas, s) for s in ("encoder", "decoder")},
                   csv=str(out / "contextual_bias.csv"), plots=[str(out / "contextual_bias_layers.png")])
    title = (f"{result['model']}: {result['counts']['contextual']} contextual errors / {result['n_sentences']}; "
             f"{n} patched")
    plot_layer_lines(per_layer, path=out / "contextual_bias_layers.png", ylabel="% of errors flipped", ylim=(-3, 103),
                     title=f"{title}; white-noise patch, best alpha (and head) per layer")
    if "encoder.head" in rate:
        plot_head_heatmap(100 * rate["encoder.head"].max(2), path=out / "contextual_bias_heads.png", vmin=0,
                          vmax=100, label="% flipped", title=f"{title}; encoder heads")
        summary["plots"].append(str(out / "contextual_bias_heads.png"))
    (out / "contextual_bias.json").write_text(json.dumps(summary, indent=1, default=_plain) + "\n")
    return summary


def _plain(x):
    return x.tolist() if isinstance(x, np.ndarray) else float(x)


def format_summary(s: dict) -> str:
    c = s["counts"]
    parts = [f"contextual-bias [{s['model']}]: {c['contextual']}/{s['n_sentences']} contextual errors "
             f"({c['correct']} correct, {c['other']} other); {s['n_items']} patched"]
    for stack, b in s["best"].items():
        if b:
            head = f" head {b['head']}" if b["head"] is not None else ""
            beh = s["behaviour"].get(stack, {})
            parts.append(f"best {stack}: {b['family']} layer {b['layer']}{head} alpha {b['alpha']} flips "
                         f"{100 * b['teacher_forced_flip']:.0f}% teacher-forced, "
                         f"{100 * beh.get('flipped', float('nan')):.0f}% in greedy decoding")
    if "rank_correlation_all" in s:
        parts.append(f"attribution vs sweep Spearman {s['rank_correlation_all']:.2f}")
    return "; ".join(parts) + f"; paper: {PAPER}"
