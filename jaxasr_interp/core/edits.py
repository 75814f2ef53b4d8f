"""Interventions as data: an edit is a static kind plus arrays, applied where a site is computed.

    interpolate(ref, alpha, ...)   a <- (1 - alpha*mask) * a + alpha*mask * ref
    zero(...)                      a <- (1 - alpha*mask) * a           (ablation; alpha = 1)
    add(delta, alpha, ...)         a <- a + alpha*mask * delta         (steering)
    replace(value, ...)            a <- (1 - mask) * a + mask * value
    restrict(keep, alpha, ...)     a <- (1 - alpha*mask) * a + alpha*mask * (a*keep / sum(a*keep))

Where an edit acts is data too: ``layers``, ``heads`` and ``positions`` take index lists or
(traced) integer arrays, and ``mask`` takes an array that broadcasts over the site's axes with
the layer axis first, aligned from the left (``[L]``, ``[L, T]``, ``[L, T, H]`` for a
``[L, T, H, dh]`` site; see :func:`.sites.axes` for each site's axis order). So a sweep over
layers, heads, positions or alphas is a ``jax.vmap`` over these arrays under one ``jit``, and
``jax.grad`` with respect to ``alpha`` or ``delta`` is attribution patching.

Edits are resolved against the site's shape just before the forward pass (``resolve``): every
array then carries the full leading layer axis, which ``lax.scan`` slices layer by layer.

``restrict`` acts on softmax patterns (``*.pattern``, ``[H, Tq, Tk]``): ``keep`` is a 0/1 key
mask that broadcasts against one layer's pattern the numpy way, aligned from the *right*
(``[Tk]``, ``[Tq, Tk]``, ``[H, Tq, Tk]``, or ``[L, H, Tq, Tk]`` for a per-layer mask), and its
last axis must be the key axis. Renormalising a softmax over the kept keys is exactly masking
the logits with -inf before the softmax: with ``a_j = exp(s_j) / Z``, ``a_j / sum_kept a_i =
exp(s_j) / sum_kept exp(s_i)``. Two rows are left as they are: a row that keeps every key (so
keeping everything is bit-identical to no edit) and a row that keeps none. A row whose kept
probabilities all underflowed to 0 becomes uniform over its kept keys.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxasr_interp.core import sites

KINDS = ("interpolate", "zero", "add", "replace", "restrict")


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["data", "alpha", "mask", "layers", "heads", "positions"],
                   meta_fields=["kind"])
@dataclasses.dataclass(frozen=True)
class Edit:
    kind: str
    data: Any = None
    alpha: Any = 1.0
    mask: Any = None
    layers: Any = None
    heads: Any = None
    positions: Any = None

    def apply(self, value):
        """Apply a resolved edit (``alpha`` already holds alpha * mask) to a site's value."""
        w = jnp.asarray(self.alpha, value.dtype)
        if self.kind == "zero":
            return (1 - w) * value
        data = jnp.asarray(self.data, value.dtype)
        if self.kind == "restrict":
            return _restricted(value, data, w)
        if self.kind == "add":
            return value + w * data
        return (1 - w) * value + w * data


def interpolate(ref, alpha=1.0, *, layers=None, heads=None, positions=None, mask=None) -> Edit:
    return Edit("interpolate", ref, alpha, mask, layers, heads, positions)


def zero(*, layers=None, heads=None, positions=None, mask=None, alpha=1.0) -> Edit:
    return Edit("zero", None, alpha, mask, layers, heads, positions)


def add(delta, alpha=1.0, *, layers=None, heads=None, positions=None, mask=None) -> Edit:
    return Edit("add", delta, alpha, mask, layers, heads, positions)


def replace(value, *, layers=None, heads=None, positions=None, mask=None) -> Edit:
    return Edit("replace", value, 1.0, mask, layers, heads, positions)


def restrict(keep, alpha=1.0, *, layers=None, heads=None, positions=None, mask=None) -> Edit:
    """Attention renormalised over the keys where ``keep`` is 1 (module docstring)."""
    return Edit("restrict", keep, alpha, mask, layers, heads, positions)


def _restricted(a, keep, w):
    n_keep = jnp.sum(keep, -1, keepdims=True)
    kept = a * keep
    total = jnp.sum(kept, -1, keepdims=True)
    renormed = jnp.where(total > 0, kept / jnp.where(total > 0, total, 1), keep / jnp.maximum(n_keep, 1))
    untouched = (n_keep == a.shape[-1]) | (n_keep == 0)
    return jnp.where(untouched, a, (1 - w) * a + w * renormed)


def _one_hot(indices, size: int, axis: int, rank: int):
    idx = jnp.atleast_1d(jnp.asarray(indices, jnp.int32))
    hot = jnp.zeros((size,), jnp.float32).at[idx].set(1.0)
    return hot.reshape((1,) * axis + (size,) + (1,) * (rank - axis - 1))


def _left_aligned(array, rank: int, site: str, what: str, full: tuple):
    array = jnp.asarray(array, jnp.float32 if what != "data" else None)
    if array.ndim > rank:
        raise ValueError(f"edit {what} for {site!r} has shape {array.shape}, more axes than the "
                         f"site's {full}")
    array = array.reshape(array.shape + (1,) * (rank - array.ndim))
    try:
        jnp.broadcast_shapes(array.shape, full)
    except ValueError:
        raise ValueError(f"edit {what} for {site!r} has shape {tuple(array.shape)}, which does not "
                         f"broadcast to the site's shape {full}") from None
    return array


def _key_mask(keep, site: str, full: tuple):
    """``restrict``'s keep mask, aligned from the right against the site, as a full-rank array."""
    if "key" not in sites.axes(site):
        raise ValueError(f"restrict applies to attention patterns (*.pattern); {site!r} has no key axis")
    keep = jnp.asarray(keep, jnp.float32)
    if keep.ndim == 0 or keep.ndim > len(full) or keep.shape[-1] != full[-1]:
        raise ValueError(f"restrict's keep for {site!r} has shape {tuple(keep.shape)}; its last axis must "
                         f"be the {full[-1]} keys and it must broadcast to {full[-3:]} from the right")
    return _left_aligned(keep.reshape((1,) * (len(full) - keep.ndim) + keep.shape), len(full), site,
                         "keep", full)


def resolve(edit: Edit, site: str, site_shape: tuple[int, ...], n_layers: int | None) -> Edit:
    """Fold alpha, mask, layers, heads and positions into one weight array, check shapes, and
    give every array the full leading layer axis of a block site."""
    if not isinstance(edit, Edit):
        raise TypeError(f"edit for {site!r} must be made with interpolate/zero/add/replace/restrict, got {type(edit).__name__}")
    if edit.kind not in KINDS:
        raise ValueError(f"unknown edit kind {edit.kind!r}; expected one of {KINDS}")
    lead = () if n_layers is None else (n_layers,)
    full = lead + tuple(site_shape)
    rank = len(full)
    roles = (("layer",) if lead else ()) + sites.axes(site)
    w = _left_aligned(edit.alpha, rank, site, "alpha", full)
    if edit.mask is not None:
        w = w * _left_aligned(edit.mask, rank, site, "mask", full)
    for what, role in (("layers", "layer"), ("heads", "head"), ("positions", "pos")):
        indices = getattr(edit, what)
        if indices is None:
            continue
        if role not in roles:
            raise ValueError(f"site {site!r} has no {role} axis, so {what}= does not apply to it")
        axis = roles.index(role)
        w = w * _one_hot(indices, full[axis], axis, rank)
    data = None
    if edit.kind == "restrict":
        data = _key_mask(edit.data, site, full)
    elif edit.kind != "zero":
        if edit.data is None:
            raise ValueError(f"a {edit.kind} edit for {site!r} needs data")
        data = _left_aligned(edit.data, rank, site, "data", full)
    if lead:  # scan slices the leading axis of every leaf: give each the full layer axis
        w = jnp.broadcast_to(w, lead + w.shape[1:])
        data = None if data is None else jnp.broadcast_to(data, lead + data.shape[1:])
    return Edit(edit.kind, data, w)


def resolve_positions(family, edits, dims, default_len: int) -> dict:
    """Resolve the edits of a decoder's token sites for cached decoding, each against as many
    positions as its own data or mask has (``default_len`` when neither has a position axis).

    Encoder sites and audio-position sites (cross-attention k/v: applied once, where the
    cache is filled) are left out. A site whose key axis grows with the tokens (a
    self-attention pattern) cannot be edited step by step and is refused.
    """
    out = {}
    for name, edit in (edits or {}).items():
        if family.stack_of(name) != "decoder" or name in family.audio_sites:
            continue
        if family.shape(name, dims, 1)[-1] != family.shape(name, dims, 2)[-1]:
            raise ValueError(f"{name!r} cannot be edited during cached decoding (its key axis grows); "
                             "edit the heads' z or the attention output instead")
        axis = family.position_axis(name, dims)
        data = edit.data
        if edit.kind == "restrict":  # its keep is aligned from the right: give it the full rank
            rank = len(family.shape(name, dims, 1)) + (family.n_layers(name, dims) is not None)
            data = jnp.reshape(data, (1,) * (rank - jnp.ndim(data)) + jnp.shape(data))
        lengths = [jnp.shape(x)[axis] for x in (data, edit.mask)
                   if x is not None and jnp.ndim(x) > axis and jnp.shape(x)[axis] > 1]
        n = max(lengths, default=default_len)
        out[name] = resolve(edit, name, family.shape(name, dims, n), family.n_layers(name, dims))
    return out


def slice_positions(family, edits: dict, dims, start, length: int) -> dict:
    """The edits of :func:`resolve_positions` for the tokens ``start .. start + length - 1``
    (``start`` may be traced). An edit whose data or weight has ``n > 1`` positions acts on
    tokens ``0..n-1`` and leaves later tokens unedited (weight 0); one without a position axis
    (length 1) acts on every token."""
    out = {}
    for name, edit in edits.items():
        axis = family.position_axis(name, dims)
        arrays = [x for x in (edit.data, edit.alpha) if x is not None]
        n = max(x.shape[axis] for x in arrays)
        if n == 1:
            out[name] = edit
            continue
        idx = start + jnp.arange(length)

        def rows(x):
            if x is None or x.shape[axis] == 1:
                return x
            return jnp.take(x, jnp.minimum(idx, n - 1), axis=axis)

        valid = (idx < n).reshape((1,) * axis + (length,) + (1,) * (edit.alpha.ndim - axis - 1))
        out[name] = Edit(edit.kind, rows(edit.data), rows(edit.alpha) * valid)
    return out
