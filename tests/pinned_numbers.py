"""Numbers pinned bit for bit across refactors: tiny.en and base on the bundled clips.

``compute(name)`` runs the public contract (forward with captures, greedy transcription with
and without an edit, the logit and encoder lenses, a head and a block sweep, attribution
patching, a decoding sweep, and a probe sweep on planted features) and returns named arrays.
``fingerprint`` reduces each to its shape, dtype and SHA-256 of its bytes, so a pinned file is
small and any change of any bit shows. ``python scripts/pin_numbers.py`` rewrites the file; do
that only for a change that is meant to move numbers, and say so in the commit.
"""

from __future__ import annotations

import hashlib

import jax.numpy as jnp
import numpy as np

import jaxasr_interp as jai
from jaxasr_interp.probes import planted_features

CLIPS = ("jfk.wav", "sense_and_sensibility_01_austen_64kb-0870.wav")


def fingerprint(array) -> dict:
    a = np.ascontiguousarray(np.asarray(array))
    return {"shape": list(a.shape), "dtype": str(a.dtype),
            "sha256": hashlib.sha256(a.tobytes()).hexdigest(),
            "sum": float(np.asarray(a, np.float64).sum()) if a.dtype != object else 0.0}


def _tokens(model, clip):
    tok = model.tokenizer
    ids = tok.encode(" " + jai.sample_transcripts()[clip].strip())
    return jnp.asarray(list(tok.prompt()) + list(ids) + [tok.eot], jnp.int32)


def compute(name: str) -> dict:
    model = jai.load(name)
    p, dims = model.params, model.dims
    out = {}
    mels = [jai.log_mel(jai.load_audio(jai.sample_path(c)), n_mels=dims.n_mels) for c in CLIPS]
    tokens = _tokens(model, CLIPS[0])
    logits, acts = jai.forward(p, mels[0], tokens, dims=dims,
                               capture=["encoder.resid_post", "decoder.cross_attn.pattern",
                                        "decoder.mlp.hidden", "logits"])
    out["forward.logits"] = logits
    for k, v in acts.items():
        out[f"forward.{k}"] = v
    out["transcribe.ids"] = np.concatenate(
        [np.asarray(r, np.int64) for r in jai.transcribe_ids(model, [jai.sample_path(c) for c in CLIPS])])
    head_off = {"decoder.cross_attn.z": jai.zero(layers=[1], heads=[2])}
    out["transcribe.edited"] = np.asarray(jai.transcribe_ids(model, jai.sample_path(CLIPS[1]),
                                                             edits=head_off)[0], np.int64)
    lens = jai.logit_lens(model, mels[0], tokens)
    out["logit_lens.top_ids"], out["logit_lens.kl"] = lens.top_ids, lens.kl
    enc = jai.encoder_lens(model, mels[0], max_new_tokens=24)
    out["encoder_lens.ids"] = np.concatenate([np.asarray(r, np.int64) for r in enc.token_ids])
    ref = jai.reference_activations(model, tokens, ["decoder.cross_attn.z", "encoder.resid_post",
                                                    "decoder.mlp_out"])
    alphas = jnp.array([0.5, 1.0])
    for family, site in (("decoder.cross_head", "decoder.cross_attn.z"),
                         ("encoder.block", "encoder.resid_post")):
        patched, clean = jai.component_sweep(p, mels[0], tokens, ref[site], alphas, dims=dims,
                                             family=family)
        out[f"sweep.{family}.logprob"] = patched["logprob"]
        out[f"sweep.{family}.clean"] = clean["logprob"]
    weights = jnp.ones(tokens.shape[0] - 1)
    grads, score = jai.attribution_patching(p, mels[0], tokens, {"decoder.mlp": ref["decoder.mlp_out"]},
                                            weights, dims=dims, families=("decoder.mlp",))
    out["attribution.decoder.mlp"], out["attribution.score"] = grads["decoder.mlp"], score
    features, _ = jai.encode(p, mels[0], dims=dims)
    w = jnp.zeros((3, dims.n_text_layer, 1, 1)).at[jnp.arange(3), jnp.arange(3)].set(1.0)
    out["decode_sweep.ids"] = jai.decode_sweep(p, features, jnp.asarray(model.tokenizer.prompt()),
                                               model.tokenizer.eot, {"decoder.mlp_out": ref["decoder.mlp_out"]},
                                               {"decoder.mlp_out": w}, dims=dims, max_new_tokens=16)
    labels = np.arange(60) % 2
    planted = planted_features(labels, 3, 16, layers=[1], seed=0)
    result = jai.probe_sweep(planted, labels, k=3)
    out["probe.accuracy"], out["probe.control"] = result.accuracy, result.control_accuracy
    return {k: fingerprint(v) for k, v in out.items()}
