"""The per-error work of the contextual-bias experiment (:mod:`.contextual_bias`): each
contextual error's component sweeps and attribution patching, and the edited greedy decoding
under the best encoder / decoder component. Each is one chunk of a checkpointed stage
(:mod:`.stages`) per error; every model call runs in the run's ``dtype`` at its ``precision``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxasr_interp.experiments.stages import Work, as_texts
from jaxasr_interp.patching.decoding import ids_to_text
from jaxasr_interp.patching.sweeps import FAMILIES, component_sweep, is_head_family, single_patch_edits
from jaxasr_interp.whisper.tokenizer import teacher_tokens


@dataclasses.dataclass(frozen=True)
class Setup:
    """What every error's sweep shares: the model, the settings and the reference run."""

    model: object
    families: tuple
    alphas: dict  # {family: alphas}
    max_new_tokens: int
    chunk: int
    attribution: bool
    numerics: dict
    noise_features: object
    noise_acts: dict
    prompt: tuple

    @property
    def width(self) -> int:
        return len(self.prompt) + self.max_new_tokens + 1  # fixed: one compiled program per family

    def tokens(self, row):
        """The teacher-forced tokens of a transcript: prompt + ids + end-of-text, padded."""
        return jnp.asarray(teacher_tokens(self.prompt, row, self.model.tokenizer.eot, self.width), jnp.int32)

    def decoder_refs(self, tokens, families) -> dict:
        """The reference (noise) run's decoder sites of ``families``, teacher-forced on ``tokens``."""
        from jaxasr_interp.whisper.model import decode
        sites = [FAMILIES[f] for f in families if f.startswith("decoder")]
        return decode(self.model.params, tokens, self.noise_features, dims=self.model.dims, capture=sites,
                      **self.numerics)[1]


def setup(model, families, alphas: dict, reference, *, max_new_tokens: int, chunk: int, attribution: bool,
          numerics: dict) -> Setup:
    """The reference run (seeded white noise, or the audio file ``reference``) encoded once."""
    from jaxasr_interp.patching.reference import white_noise
    from jaxasr_interp.whisper.audio import load_audio, log_mel
    from jaxasr_interp.whisper.model import encode
    noise = white_noise() if reference is None else load_audio(reference)
    features, acts = encode(model.params, log_mel(noise, n_mels=model.dims.n_mels), dims=model.dims,
                            capture=[FAMILIES[f] for f in families if f.startswith("encoder")], **numerics)
    return Setup(model, tuple(families), alphas, max_new_tokens, chunk, attribution, numerics, features, acts,
                 tuple(model.tokenizer.prompt()))


def sweep_item(s: Setup, audio, row, p: int, spoken: int) -> dict:
    """One error's sweeps: ``flips <family>`` [L, P, A] (the top-1 token at the error position
    became the spoken word's first token), ``effects <family>`` [L, P, A] (change of the
    spoken-minus-expected logit) and, with attribution, ``grads <family>`` [L, P]."""
    from jaxasr_interp.patching.attribution import attribution_patching
    from jaxasr_interp.whisper.audio import log_mel
    m, dims = s.model, s.model.dims
    tokens = s.tokens(row)
    pos = len(s.prompt) + p - 1  # the position whose next token is the error
    refs = {**s.noise_acts, **s.decoder_refs(tokens, s.families)}
    refs = {f: refs[FAMILIES[f]] for f in s.families}
    mel = log_mel(audio, n_mels=dims.n_mels)
    contrast = tokens[1:].at[pos].set(spoken)
    out = flips_and_effects(s, mel, tokens, refs, pos, spoken)
    if s.attribution:
        g, _ = attribution_patching(m.params, mel, tokens, refs, jnp.zeros(s.width - 1).at[pos].set(1.0), contrast,
                                    dims=dims, families=s.families, metric="logit_diff", **s.numerics)
        out.update({f"grads {f}": np.asarray(g[f]) for f in s.families})
    return out


def flips_and_effects(s: Setup, mel, tokens, refs: dict, pos: int, spoken: int) -> dict:
    """``flips <family>`` and ``effects <family>`` [L, P, A] of every family of ``s`` patched
    towards ``refs[family]`` (the reference's stacked site) at the error position ``pos``."""
    contrast, out = tokens[1:].at[pos].set(spoken), {}
    for fam in s.families:
        patched, clean = component_sweep(s.model.params, mel, tokens, refs[fam], jnp.asarray(s.alphas[fam]),
                                         contrast, dims=s.model.dims, family=fam, chunk=s.chunk, **s.numerics)
        out[f"flips {fam}"] = np.asarray(patched["top"][..., pos] == spoken)
        diff = patched["contrast_logit"][..., pos] - patched["logit"][..., pos]
        out[f"effects {fam}"] = np.asarray(diff - (clean["contrast_logit"][pos] - clean["logit"][pos]))
    return out


def best_patch(rate: dict, alphas: dict, stack: str):
    """The family, layer, head and alpha of ``stack`` that flips the most errors (None: no
    family of that stack was swept)."""
    cands = [(float(r.max()), f) for f, r in rate.items() if f.startswith(stack)]
    if not cands:
        return None
    score, fam = max(cands)
    layer, patch, a = np.unravel_index(int(np.argmax(rate[fam])), rate[fam].shape)
    head = int(patch) if is_head_family(fam) else None
    return dict(family=fam, layer=int(layer), head=head, alpha=alphas[fam][int(a)], teacher_forced_flip=score)


def edited_text(s: Setup, best: dict, audio, row) -> str:
    """The greedy transcript of ``audio`` under the single patch ``best``."""
    from jaxasr_interp.whisper.api import transcribe_ids
    fam, dims = best["family"], s.model.dims
    ref = (s.noise_acts if fam.startswith("encoder") else s.decoder_refs(s.tokens(row), [fam]))[FAMILIES[fam]]
    edits = single_patch_edits(fam, ref, best["layer"], best["alpha"], dims=dims, head=best["head"])
    ids = transcribe_ids(s.model, [audio], batch_size=1, edits=edits, max_new_tokens=s.max_new_tokens,
                         **s.numerics)[0]
    return ids_to_text(s.model.tokenizer, ids)


def behaviour(s: Setup, work: Work, classify, stimuli, audios, items, rate) -> dict:
    """Edited greedy decoding of every patched error under the best encoder / decoder component
    (one chunk per error of the stage ``behaviour_<stack>``)."""
    out = {}
    for stack in ("encoder", "decoder"):
        best = best_patch(rate, s.alphas, stack)
        if best is None:
            continue
        one = lambda it, best=best: dict(text=np.asarray([edited_text(s, best, audios[it[0]], it[1])]))  # noqa: E731
        parts = work.map(f"behaviour_{stack}", one, items, key=best)
        texts = [as_texts(p["text"])[0] for p in parts]
        flipped = [classify(t, stimuli[i]) == "correct" for t, (i, _, _, _) in zip(texts, items)]
        out[stack] = dict(best, flipped=float(np.mean(flipped)), transcripts=texts)
    return out


def rank_correlations(grads: dict, effects: dict, alphas: dict) -> dict:
    """Attribution estimates vs the real alpha = 1 sweep: per family and over all of them."""
    from jaxasr_interp.patching.attribution import rank_correlation
    full = {f: alphas[f].index(1.0) for f in grads if 1.0 in alphas[f]}
    return dict(rank_correlation={f: rank_correlation(np.stack(grads[f]), np.stack(effects[f])[..., a])
                                  for f, a in full.items()},
                rank_correlation_all=rank_correlation(
                    np.concatenate([np.ravel(grads[f]) for f in full]),
                    np.concatenate([np.ravel(np.stack(effects[f])[..., a]) for f, a in full.items()])))
