"""Activation-patching sweeps as single compiled programs.

A sweep is a ``vmap`` (or a ``lax.map`` in chunks, to bound memory) over edit masks and alphas
of one pure pass; nothing is a Python loop of forward passes. A patch at layer ``l`` resumes
its stack at ``l`` from the clean run's ``resid_pre[l]`` (:mod:`.resume`): layers below are
unchanged by construction, so a sweep costs about ``(L + 1) / 2`` layers per patch, not ``L``.
The static loop over layers inside the ``jit`` is what lets each layer start from its own
residual.

Conventions: ``tokens`` [T] is the clean run's sequence (prompt + transcript + end-of-text,
optionally padded with end-of-text: positions are causal, so padding changes nothing before
it); metrics at position ``i`` are about the next token ``tokens[i + 1]``, so they have
``T - 1`` positions. ``ref`` is the reference run's captured site, stacked over layers (see
:func:`.reference.reference_activations`; encoder sites do not depend on the tokens).

Component families (:data:`FAMILIES`): whole encoder / decoder blocks (``resid_post``), the
self-attention, cross-attention and MLP outputs of each layer, and single heads (the head's
slice of ``attn.z``, the weighted values before the output projection, so that patching a head
is exactly patching its contribution to ``attn_out``). ``mode="interpolate"`` sets
``a <- (1 - alpha) a + alpha ref``; ``mode="zero"`` ablates, ``a <- (1 - alpha) a``.

:func:`component_sweep` returns per-patch teacher-forced metrics (:func:`readout`): the logit,
log-probability and rank-1 token at every position, and the logit of a ``contrast`` token
(e.g. the acoustically correct word where the model wrote the contextual one), so the logit
difference is ``logit - contrast_logit``. Behavioural metrics (edited greedy decoding) live in
:mod:`.decoding`. Every sweep's patch weights come from :mod:`jaxasr_interp.core.grid`.

On several devices every sweep splits its patches over all of them
(:func:`jaxasr_interp.core.sharding.map_chunks`; one device: exactly the former ``lax.map``),
and takes parameters split FSDP-style (:func:`jaxasr_interp.whisper.sharding.shard_params`).
"""

from __future__ import annotations

import difflib
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.dtypes import as_precision, compute_dtype
from jaxasr_interp.core.grid import patch_grid
from jaxasr_interp.core.sharding import divisor, map_chunks  # noqa: F401 (divisor: its old home)
from jaxasr_interp.whisper.config import Dims
from jaxasr_interp.core.edits import interpolate, zero
from jaxasr_interp.whisper.model import decode, encode
from jaxasr_interp.whisper.model import cross_kv_stack, decode_from, encode_from
from jaxasr_interp.whisper.sites import n_layers
from jaxasr_interp.whisper.sites import shape as site_shape

_HEAD_SITES = ("decoder.cross_attn.z", "decoder.self_attn.z", "decoder.cross_attn.q",
               "decoder.self_attn.q", "decoder.self_attn.k", "decoder.self_attn.v")

FAMILIES = {
    "encoder.block": "encoder.resid_post",
    "encoder.attn": "encoder.attn_out",
    "encoder.mlp": "encoder.mlp_out",
    "encoder.head": "encoder.attn.z",
    "decoder.block": "decoder.resid_post",
    "decoder.self_attn": "decoder.self_attn_out",
    "decoder.cross_attn": "decoder.cross_attn_out",
    "decoder.mlp": "decoder.mlp_out",
    "decoder.self_head": "decoder.self_attn.z",
    "decoder.cross_head": "decoder.cross_attn.z",
}
MODES = ("interpolate", "zero")


def family_of(name: str) -> str:
    """A family name, or the site a family patches (``"decoder.cross_attn.z"``) -> the family."""
    if name in FAMILIES:
        return name
    by_site = {site: fam for fam, site in FAMILIES.items()}
    if name in by_site:
        return by_site[name]
    near = difflib.get_close_matches(name, list(FAMILIES) + list(by_site), n=3, cutoff=0.4)
    raise KeyError(f"unknown component {name!r}; " + (f"did you mean {', '.join(near)}? " if near else "")
                   + f"families: {', '.join(FAMILIES)} (or their sites: {', '.join(by_site)})")


def is_head_family(family: str) -> bool:
    return FAMILIES[family_of(family)].endswith(".z")


def _clean_logits(ln_final, params, tokens):
    rows = params["decoder"]["token_embedding"]["embedding"][tokens[1:]].astype(jnp.float32)
    return jnp.sum(ln_final[:-1].astype(jnp.float32) * rows, axis=-1)


def clean_token_logits(params, tokens, audio_features, *, dims: Dims, edits=None,
                       dtype=jnp.float32, precision="highest"):
    """Logit of every clean next token ``tokens[1:]`` under ``edits``: [T - 1]."""
    _, acts = decode(params, tokens, audio_features, dims=dims, edits=edits,
                     capture=["decoder.ln_final"], dtype=dtype, precision=precision)
    return _clean_logits(acts["decoder.ln_final"], params, tokens)


def head_sweep(params, tokens, audio_features, ref, alphas, *, dims: Dims,
               site: str = "decoder.cross_attn.z", chunk: int | None = None, dtype=None,
               precision="highest"):
    """Patch every (layer, head) of ``site`` towards ``ref`` at every alpha, one compiled pass.

    ``tokens`` [T], ``audio_features`` [S, D] (the clean encoder output, computed once),
    ``ref`` [L, T, H, dh], ``alphas`` [A] -> (patched clean-token logits [L, H, A, T - 1],
    unpatched ones [T - 1]).

    A patch at layer l resumes the decoder at l from the clean ``resid_pre[l]`` (layers below
    are unchanged), so the sweep costs about (L + 1) / 2 layers per patch, not L. Each layer's
    H x A patches are split over all devices (:func:`~jaxasr_interp.core.sharding.map_chunks`),
    ``chunk`` per device at a time (None: all at once). ``dtype``: ``"float32"`` /
    ``"bfloat16"`` (None: the parameters' own, :func:`~jaxasr_interp.core.dtypes.compute_dtype`).
    """
    if site not in _HEAD_SITES:
        raise ValueError(f"head_sweep patches per-head token sites {_HEAD_SITES}, got {site!r}")
    return _head_sweep(params, tokens, audio_features, ref, alphas, dims=dims, site=site, chunk=chunk,
                       dtype=compute_dtype(dtype, params), precision=as_precision(precision))


@functools.partial(jax.jit, static_argnames=("dims", "site", "chunk", "dtype", "precision"))
def _head_sweep(params, tokens, audio_features, ref, alphas, *, dims, site, chunk, dtype, precision):
    n_layer, n_head = n_layers(site, dims), dims.n_text_head
    kw = dict(dims=dims, dtype=dtype, precision=precision)
    cross = cross_kv_stack(params, audio_features, **kw)  # once, shared by every patch
    _, clean = decode(params, tokens, audio_features, capture=["decoder.resid_pre", "decoder.ln_final"], **kw)
    alphas = jnp.asarray(alphas, jnp.float32)
    out = []
    for layer in range(n_layer):  # static: each layer resumes from its own clean residual
        def one(weight, layer=layer):
            _, acts = decode_from(params, clean["decoder.resid_pre"][layer], None, cross=cross,
                                  start_layer=layer, edits={site: interpolate(ref, 1.0, mask=weight)},
                                  capture=["decoder.ln_final"], **kw)
            return _clean_logits(acts["decoder.ln_final"], params, tokens)

        weights, _ = patch_grid(head_local_masks(n_head), n_layer, alphas, layers=[layer])  # [H * A, L, 1, H]
        logits = map_chunks(jax.vmap(one), weights, chunk)
        out.append(logits.reshape((n_head, alphas.shape[0]) + logits.shape[1:]))
    return jnp.stack(out), _clean_logits(clean["decoder.ln_final"], params, tokens)


def readout(ln_final, params, tokens, contrast=None) -> dict:
    """Teacher-forced metrics at every position ``i`` (about ``tokens[i + 1]``), each [T - 1]:
    ``logit`` and ``logprob`` of the clean token, ``contrast_logit`` (of ``contrast[i]``;
    the clean token when None) and ``top`` (the argmax over the whole vocabulary)."""
    logits = (ln_final[:-1].astype(jnp.float32)
              @ params["decoder"]["token_embedding"]["embedding"].astype(jnp.float32).T)
    clean = tokens[1:]
    contrast = clean if contrast is None else contrast
    rows = jnp.arange(clean.shape[0])
    return dict(logit=logits[rows, clean], logprob=jax.nn.log_softmax(logits)[rows, clean],
                contrast_logit=logits[rows, contrast], top=jnp.argmax(logits, -1).astype(jnp.int32))


def head_local_masks(n_head: int) -> np.ndarray:
    """One mask per head of a ``[T, H, dh]`` site, [H, 1, H] (broadcast over positions and
    head width)."""
    return np.eye(n_head, dtype=np.float32).reshape(n_head, 1, n_head)


def local_masks(family: str, dims: Dims) -> np.ndarray:
    """The patches of one layer of a family, each a mask without the layer axis: [H, 1, H] for
    head families, [1, 1] otherwise (host arrays: see :mod:`jaxasr_interp.core.grid`)."""
    site = FAMILIES[family_of(family)]
    if site.endswith(".z"):
        return head_local_masks(dims.n_audio_head if site.startswith("encoder.") else dims.n_text_head)
    return np.ones((1, 1), np.float32)


def family_grid(family: str, dims: Dims, alphas=(1.0,), *, layers=None, heads=None):
    """Every (layer, head or whole layer, alpha) patch of a family: ``(site, weights
    [N, L, ...], index [N, 3])`` by :func:`jaxasr_interp.core.grid.patch_grid` (index rows are
    (layer, head or 0, alpha index)); ``layers`` / ``heads`` select (default: all)."""
    site = FAMILIES[family_of(family)]
    weights, index = patch_grid(local_masks(family, dims), n_layers(site, dims), alphas,
                                layers=layers, patches=heads)
    return site, weights, index


def make_edit(mode: str, ref, weight):
    """The edit of one patch; ``weight`` = alpha * mask, with the layer axis first."""
    if mode == "zero":
        return zero(mask=weight)
    if mode == "interpolate":
        return interpolate(ref, 1.0, mask=weight)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def zero_reference(site: str, dims: Dims, n_tokens: int):
    """Zeros in the shape of a site's stacked value: interpolating towards them *is* zero
    ablation, ``(1 - alpha) a``, so ablation reuses the compiled interpolation program."""
    return jnp.zeros((n_layers(site, dims),) + site_shape(site, dims, n_tokens), jnp.float32)


def reference_for(mode: str, ref, site: str, dims: Dims, n_tokens: int):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "zero":
        return zero_reference(site, dims, n_tokens)
    if ref is None:
        raise ValueError(f"mode='interpolate' needs the reference's {site} activations (ref=...)")
    return ref


def _sweep_layers(run_layer, local, alphas, n_layer: int, chunk: int):
    """Static loop over layers; in each, that layer's (patch, alpha) grid in chunks, split over
    all devices (:func:`~jaxasr_interp.core.sharding.map_chunks`)."""
    out = []
    for layer in range(n_layer):
        weights, _ = patch_grid(local, n_layer, alphas, layers=[layer])
        res = map_chunks(jax.vmap(functools.partial(run_layer, layer)), weights, chunk)
        out.append(jax.tree_util.tree_map(
            lambda x: x.reshape((local.shape[0], alphas.shape[0]) + x.shape[1:]), res))
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *out)


def component_sweep(params, mel, tokens, ref, alphas, contrast=None, *, dims: Dims, family: str,
                    mode: str = "interpolate", chunk: int = 8, dtype=None, precision="highest"):
    """Patch every component of ``family`` at every alpha: one compiled program.

    ``mel`` [n_mels, frames], ``tokens`` [T], ``ref`` the reference's stacked site
    ([L, ...]; ignored when ``mode="zero"``), ``alphas`` [A], ``contrast`` [T - 1] token ids or
    None -> ``(patched, clean)``: dicts of :func:`readout` metrics, patched ones
    ``[L, P, A, T - 1]`` (P = heads for head families, else 1), clean ones ``[T - 1]``.
    ``chunk`` patches run at once (memory: an encoder patch holds a 30 s encoder's activations),
    on each device: each chunk is split over all devices
    (:func:`~jaxasr_interp.core.sharding.map_chunks`). Zero ablation is interpolation towards
    zeros: the same compiled program. ``dtype``: ``"float32"`` / ``"bfloat16"`` (None: the
    parameters' own); ``precision``: the matmul precision (:mod:`jaxasr_interp.core.dtypes`).
    """
    family = family_of(family)
    ref = reference_for(mode, ref, FAMILIES[family], dims, jnp.shape(tokens)[0])
    return _component_sweep(params, mel, tokens, ref, alphas, contrast, dims=dims, family=family,
                            chunk=chunk, dtype=compute_dtype(dtype, params),
                            precision=as_precision(precision))


@functools.partial(jax.jit, static_argnames=("dims", "family", "chunk", "dtype", "precision"))
def _component_sweep(params, mel, tokens, ref, alphas, contrast, *, dims, family, chunk, dtype, precision):
    family = family_of(family)
    site = FAMILIES[family]
    kw = dict(dims=dims, dtype=dtype, precision=precision)
    alphas = jnp.asarray(alphas, jnp.float32)
    local = local_masks(family, dims)
    if site.startswith("encoder."):
        features, enc = encode(params, mel, capture=["encoder.resid_pre"], **kw)

        def run_layer(layer, weight):
            feats, _ = encode_from(params, enc["encoder.resid_pre"][layer], start_layer=layer,
                                   edits={site: interpolate(ref, 1.0, mask=weight)}, **kw)
            _, acts = decode(params, tokens, feats, capture=["decoder.ln_final"], **kw)
            return readout(acts["decoder.ln_final"], params, tokens, contrast)

        _, clean = decode(params, tokens, features, capture=["decoder.ln_final"], **kw)
    else:
        features, _ = encode(params, mel, **kw)
        cross = cross_kv_stack(params, features, **kw)  # once, shared by every patch
        _, clean = decode(params, tokens, features, capture=["decoder.resid_pre", "decoder.ln_final"], **kw)

        def run_layer(layer, weight):
            _, acts = decode_from(params, clean["decoder.resid_pre"][layer], None, cross=cross,
                                  start_layer=layer, edits={site: interpolate(ref, 1.0, mask=weight)},
                                  capture=["decoder.ln_final"], **kw)
            return readout(acts["decoder.ln_final"], params, tokens, contrast)

    patched = _sweep_layers(run_layer, local, alphas, n_layers(site, dims), chunk)
    return patched, readout(clean["decoder.ln_final"], params, tokens, contrast)


def single_patch_edits(family: str, ref, layer: int, alpha: float, *, dims: Dims, head=None,
                       mode: str = "interpolate") -> dict:
    """The edits dict of one patch of a family (for ``forward``, ``transcribe``...)."""
    site, weights, _ = family_grid(family, dims, [alpha], layers=[layer], heads=[0 if head is None else head])
    return {site: make_edit(mode, ref, weights[0])}
