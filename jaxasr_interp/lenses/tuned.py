"""Tuned lenses (beyond the paper): a learned affine translator per layer.

A translator for a stack of ``L`` layers of width ``D`` is the pytree
``{"weight": [L, D, D], "bias": [L, D]}`` acting as ``h -> h + h @ weight[l] + bias[l]``, so
zeros are the identity and a translator initialised to zeros *is* the plain lens (tested).

- Decoder: ``resid_post[l]`` is translated before ``ln_final`` and the tied embedding, and
  trained to minimise KL(final distribution || lens distribution), averaged over layers and
  the (unpadded) token positions of a set of utterances.
- Encoder: ``resid_post[l]`` is translated before ``ln_post`` and given to the unchanged
  decoder, trained to minimise KL(the model's next-token distribution || the decoder's
  distribution from the translated layer), teacher-forced on the model's own transcripts.

Training is one jit-compiled ``lax.scan`` over optax (adam) steps on activations captured
once from the frozen model; every layer is trained at once (the layer axis is an array axis).
:func:`save_translators` / :func:`load_translators` use orbax. Use a trained translator with
``logit_lens(..., translator=...)`` and ``encoder_lens(..., translator=...)``.

``dtype`` / ``precision`` (:mod:`jaxasr_interp.core.dtypes`): the frozen model (its captured
activations, the decoder inside the encoder loss, the read-out matmul of the decoder loss) runs
in ``dtype`` (None: the parameters' storage dtype) at ``precision``; the translators, their
gradients and the optimizer state stay float32, and so do the LayerNorms and the losses.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxasr_interp.core import layers as L
from jaxasr_interp.core.dtypes import as_precision, compute_dtype, matmul_precision
from jaxasr_interp.whisper.model import decode, encode


def identity_translator(n_layers: int, d: int) -> dict:
    return {"weight": jnp.zeros((n_layers, d, d), jnp.float32), "bias": jnp.zeros((n_layers, d), jnp.float32)}


def translate(translator, h):
    """h [L, ..., D] -> h + h @ weight[l] + bias[l] for each layer l."""
    w, b = translator["weight"], translator["bias"]
    extra = (1,) * (h.ndim - 2)
    return h + jnp.einsum("l...d,lde->l...e", h, w) + b.reshape(b.shape[:1] + extra + b.shape[1:])


def decoder_loss(translator, resid, final_logp, mask, ln, embedding):
    """resid [N, L, T, D], final_logp [N, T, V], mask [N, T] -> mean KL over layers. The
    read-out matmul runs in the dtype of ``resid`` (the model's compute dtype)."""
    h = jax.vmap(lambda r: translate(translator, r))(resid)
    logits = (L.layer_norm(h, ln).astype(resid.dtype) @ embedding.astype(resid.dtype).T).astype(jnp.float32)
    kl = jnp.sum(jnp.exp(final_logp[:, None]) * (final_logp[:, None] - jax.nn.log_softmax(logits, -1)), -1)
    return jnp.sum(kl * mask[:, None]) / (jnp.sum(mask) * resid.shape[1])


def encoder_loss(translator, resid, tokens, final_logp, mask, params, dims, dtype=jnp.float32,
                 precision: str | None = "highest"):
    """resid [N, L, S, D] (encoder resid_post), tokens [N, T] -> mean KL over layers (the
    frozen decoder in ``dtype`` at ``precision``)."""
    def one(r, t, flp, m):
        feats = L.layer_norm(translate(translator, r), params["encoder"]["ln_post"])  # [L, S, D]
        logits = jax.vmap(lambda f: decode(params, t, f, dims=dims, dtype=dtype,
                                           precision=precision)[0])(feats)          # [L, T, V]
        logp = jax.nn.log_softmax(logits, -1)
        return jnp.sum(jnp.sum(jnp.exp(flp) * (flp - logp), -1) * m)
    total = jnp.sum(jax.vmap(one)(resid, tokens, final_logp, mask))
    return total / (jnp.sum(mask) * resid.shape[1])


@functools.partial(jax.jit, static_argnames=("loss_fn", "steps", "lr", "weight_decay", "precision"))
def _fit(translator, args, *, loss_fn, steps: int, lr: float, weight_decay: float, precision):
    with matmul_precision(precision):
        return _adam(translator, args, loss_fn=loss_fn, steps=steps, lr=lr, weight_decay=weight_decay)


def _adam(translator, args, *, loss_fn, steps: int, lr: float, weight_decay: float):
    opt = optax.adamw(lr, weight_decay=weight_decay)

    def step(state, _):
        tr, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(tr, *args)
        updates, opt_state = opt.update(grads, opt_state, tr)
        return (optax.apply_updates(tr, updates), opt_state), loss

    (translator, _), losses = jax.lax.scan(step, (translator, opt.init(translator)), None, length=steps)
    return translator, jnp.append(losses, loss_fn(translator, *args))


def _pad(seqs, pad: int):
    width = max(map(len, seqs))
    tokens = np.array([list(s) + [pad] * (width - len(s)) for s in seqs], np.int32)
    mask = np.array([[1.0] * len(s) + [0.0] * (width - len(s)) for s in seqs], np.float32)
    return jnp.asarray(tokens), jnp.asarray(mask)


@functools.partial(jax.jit, static_argnames=("dims", "dtype", "precision"))
def _captures(params, mels, tokens, *, dims, dtype, precision):
    def one(mel, t):
        numerics = dict(dtype=dtype, precision=precision)
        feats, enc = encode(params, mel, dims=dims, capture=["encoder.resid_post"], **numerics)
        logits, dec = decode(params, t, feats, dims=dims, capture=["decoder.resid_post"], **numerics)
        return enc["encoder.resid_post"], dec["decoder.resid_post"], jax.nn.log_softmax(logits, -1)
    return jax.vmap(one)(mels, tokens)


def fit_translators(params, dims, mels, token_seqs, *, pad: int = 0, which=("decoder", "encoder"),
                    steps: int = 100, lr: float = 1e-3, weight_decay: float = 1e-4,
                    init: dict | None = None, dtype=None, precision: str | None = "highest"
                    ) -> tuple[dict, dict]:
    """Train decoder and/or encoder translators on utterances (mels [N, n_mels, frames] and
    token sequences, e.g. prompt + the model's transcript), the frozen model in ``dtype`` at
    ``precision`` (module docstring). Returns ``(translators, losses)``: per kind, the trained
    float32 pytree and the loss before each step plus after the last."""
    dtype, precision = compute_dtype(dtype, params), as_precision(precision)
    tokens, mask = _pad(token_seqs, pad)
    enc_resid, dec_resid, final_logp = _captures(params, jnp.asarray(mels), tokens, dims=dims,
                                                 dtype=dtype, precision=precision)
    init = init or {}
    out, losses = {}, {}
    for kind in which:
        if kind == "decoder":
            start = init.get(kind) or identity_translator(dims.n_text_layer, dims.n_text_state)
            args = (dec_resid, final_logp, mask, params["decoder"]["ln"], params["decoder"]["token_embedding"]["embedding"])
            fn = decoder_loss
        elif kind == "encoder":
            start = init.get(kind) or identity_translator(dims.n_audio_layer, dims.n_audio_state)
            args = (enc_resid, tokens, final_logp, mask, params)
            fn = functools.partial(encoder_loss, dims=dims, dtype=dtype, precision=precision)
        else:
            raise ValueError(f"unknown translator kind {kind!r}; use 'decoder' or 'encoder'")
        out[kind], loss = _fit(start, args, loss_fn=fn, steps=steps, lr=lr, weight_decay=weight_decay,
                               precision=precision)
        losses[kind] = np.asarray(loss)
    return out, losses


def greedy_ids(model, mels, max_new_tokens: int | None = None, *, dtype=None,
               precision: str | None = "highest") -> list[list[int]]:
    """The model's greedy transcript ids (end-of-text excluded) for mels [N, n_mels, frames],
    decoded in ``dtype`` (None: the storage dtype) at ``precision``."""
    from jaxasr_interp.whisper.api import encode_batch
    from jaxasr_interp.whisper.decoding import greedy_decode, logit_bias
    from jaxasr_interp.whisper.tokenizer import cut_at_eot
    tok, dims = model.tokenizer, model.dims
    zero = logit_bias(dims.n_vocab, ())
    numerics = dict(dtype=compute_dtype(dtype, model.params), precision=as_precision(precision))
    features = encode_batch(model.params, jnp.asarray(mels), dims=dims, **numerics)
    ids = np.asarray(greedy_decode(model.params, features, jnp.asarray(tok.prompt(), jnp.int32), tok.eot,
                                   zero, zero, dims=dims, max_new_tokens=max_new_tokens or dims.n_text_ctx // 2,
                                   **numerics))
    return [cut_at_eot(r, tok.eot) for r in ids]


def train_tuned_lens(model, audio_or_mels, *, which=("decoder", "encoder"), steps: int = 100,
                     lr: float = 1e-3, weight_decay: float = 1e-4, dtype=None,
                     precision: str | None = "highest") -> tuple[dict, dict]:
    """Tuned lenses for ``model`` trained on utterances (paths, waveforms or mels),
    teacher-forced on the model's own greedy transcripts, the model run in ``dtype`` at
    ``precision``. See :func:`fit_translators`."""
    from jaxasr_interp.lenses.encoder import as_mels
    mels = jnp.stack(as_mels(model, audio_or_mels)[0])
    numerics = dict(dtype=dtype, precision=precision)
    seqs = [model.tokenizer.prompt() + i for i in greedy_ids(model, mels, **numerics)]
    return fit_translators(model.params, model.dims, mels, seqs, pad=model.tokenizer.eot,
                           which=which, steps=steps, lr=lr, weight_decay=weight_decay, **numerics)


def save_translators(translators: dict, directory, *, overwrite: bool = False) -> Path:
    """Write ``{"decoder": ..., "encoder": ...}`` translators with orbax (+ shapes.json)."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    tree = {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in translators.items()}
    directory.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(directory / "translators", tree, force=overwrite)
        ckptr.wait_until_finished()
    shapes = {k: {n: list(a.shape) for n, a in v.items()} for k, v in tree.items()}
    (directory / "shapes.json").write_text(json.dumps(shapes, indent=1) + "\n")
    return directory


def load_translators(directory) -> dict:
    """Translators written by :func:`save_translators`."""
    import orbax.checkpoint as ocp
    directory = Path(directory).expanduser().absolute()
    if not (directory / "shapes.json").is_file():
        raise FileNotFoundError(f"{directory}: not a tuned-lens directory (no shapes.json)")
    shapes = json.loads((directory / "shapes.json").read_text())
    target = {k: {n: jax.ShapeDtypeStruct(tuple(s), jnp.float32) for n, s in v.items()} for k, v in shapes.items()}
    with ocp.StandardCheckpointer() as ckptr:
        tree = ckptr.restore(directory / "translators", target)
    return jax.tree_util.tree_map(jnp.asarray, tree)
