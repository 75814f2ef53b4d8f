"""Activation-patching sweeps as single compiled programs.

A sweep is a ``vmap`` over edit masks and alphas of one pure decoder pass; nothing is a Python
loop of forward passes. The metric is the logit of each *clean* next token, read from
``decoder.ln_final`` through the clean tokens' rows of the tied embedding: a sweep that only
needs those logits never pays for the full vocabulary projection (most of a decoder pass for
Whisper's 51,864-52,000 tokens), and XLA drops the unused projection from the compiled program.

Conventions: ``tokens`` [T] is the clean run's sequence (prompt + transcript + end-of-text);
the clean-token logit at position ``i`` is the logit of ``tokens[i + 1]``, so metrics have
``T - 1`` positions. ``ref`` is the reference run's captured site, stacked over layers (see
:func:`.reference.reference_activations`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from .config import Dims
from .edits import interpolate
from .model import decode
from .resume import cross_kv_stack, decode_from
from .sites import n_layers

_HEAD_SITES = ("decoder.cross_attn.z", "decoder.self_attn.z", "decoder.cross_attn.q",
               "decoder.self_attn.q", "decoder.self_attn.k", "decoder.self_attn.v")


def _clean_logits(ln_final, params, tokens):
    rows = params["decoder"]["token_embedding"][tokens[1:]].astype(jnp.float32)
    return jnp.sum(ln_final[:-1].astype(jnp.float32) * rows, axis=-1)


def clean_token_logits(params, tokens, audio_features, *, dims: Dims, edits=None,
                       dtype=jnp.float32, precision="highest"):
    """Logit of every clean next token ``tokens[1:]`` under ``edits``: [T - 1]."""
    _, acts = decode(params, tokens, audio_features, dims=dims, edits=edits,
                     capture=["decoder.ln_final"], dtype=dtype, precision=precision)
    return _clean_logits(acts["decoder.ln_final"], params, tokens)


def head_masks(n_layer: int, n_head: int):
    """One mask per (layer, head), [L * H, L, 1, H]: broadcast over positions and head width."""
    return jnp.eye(n_layer * n_head).reshape(n_layer * n_head, n_layer, 1, n_head)


@functools.partial(jax.jit, static_argnames=("dims", "site", "dtype", "precision"))
def head_sweep(params, tokens, audio_features, ref, alphas, *, dims: Dims,
               site: str = "decoder.cross_attn.z", dtype=jnp.float32, precision="highest"):
    """Patch every (layer, head) of ``site`` towards ``ref`` at every alpha, one compiled pass.

    ``tokens`` [T], ``audio_features`` [S, D] (the clean encoder output, computed once),
    ``ref`` [L, T, H, dh], ``alphas`` [A] -> (patched clean-token logits [L, H, A, T - 1],
    unpatched ones [T - 1]).

    A patch at layer l resumes the decoder at l from the clean ``resid_pre[l]`` (layers below
    are unchanged), so the sweep costs about (L + 1) / 2 layers per patch, not L.
    """
    if site not in _HEAD_SITES:
        raise ValueError(f"head_sweep patches per-head token sites {_HEAD_SITES}, got {site!r}")
    n_layer, n_head = n_layers(site, dims), dims.n_text_head
    kw = dict(dims=dims, dtype=dtype, precision=precision)
    cross = cross_kv_stack(params, audio_features, **kw)  # once, shared by every patch
    _, clean = decode(params, tokens, audio_features, capture=["decoder.resid_pre", "decoder.ln_final"], **kw)
    heads = jnp.eye(n_head).reshape(n_head, 1, n_head)  # [H patches, T, H]
    out = []
    for layer in range(n_layer):  # static: each layer resumes from its own clean residual
        def one(head_mask, alpha, layer=layer):
            mask = jnp.zeros((n_layer,) + head_mask.shape).at[layer].set(head_mask)
            _, acts = decode_from(params, clean["decoder.resid_pre"][layer], None, cross=cross,
                                  start_layer=layer, edits={site: interpolate(ref, alpha, mask=mask)},
                                  capture=["decoder.ln_final"], **kw)
            return _clean_logits(acts["decoder.ln_final"], params, tokens)

        out.append(jax.vmap(jax.vmap(one, (None, 0)), (0, None))(heads, jnp.asarray(alphas)))
    return jnp.stack(out), _clean_logits(clean["decoder.ln_final"], params, tokens)
