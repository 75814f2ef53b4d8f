"""The engine: one stack of one model family, run with edits and captures.

Every family's ``encode`` / ``decode`` is thin: it casts its parameters, builds the few
closures that differ between families (the embedding, the block, the head after the last
block) and calls :func:`run_stack`, which does for all of them what is the same:

- :meth:`Family.own <jaxasr_interp.core.family.Family.own>` keeps the edits and captures that
  name this stack, outside ``jit`` (so an edit of the other stack never reaches this stack's
  compiled program: a decoder-only sweep reuses one compiled encoder);
- :func:`split` resolves each edit against its site's shape (layers / heads / positions /
  mask -> one weight array, :func:`~jaxasr_interp.core.edits.resolve`) and splits edits and
  captures into whole-stack ones and per-block ones;
- the blocks run from ``start_layer`` when one is given (layers below it are skipped: the
  input is then that layer's ``resid_pre``), under ``lax.scan`` with the per-block edits
  scanned alongside the stacked parameters, or unrolled (cached decoding steps, where a scan's per-layer slicing
  costs more than the step's arithmetic);
- captures come back stacked ``[L - start_layer, ...]`` for block sites;
- with ``readout=ids`` (integer ``[T, k]``, checked by :func:`check_readout`) the head reads
  out only those token ids at each position (:func:`read_out`): logits ``[T, k]``, the values
  of the full ``[T, n_vocab]`` logits at those ids, without the vocabulary projection.

Parameters may be given as the bare tree or as a Flax variable collection ``{"params": tree}``
(:func:`unwrap`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.core.edits import resolve
from jaxasr_interp.core.family import Family
from jaxasr_interp.core.sites import Tap


def unwrap(params):
    """The parameter tree of a Flax variable collection ``{"params": tree}`` (or the tree)."""
    if hasattr(params, "keys") and set(params.keys()) == {"params"}:
        return params["params"]
    return params


def cast(params, dtype):
    """Every leaf in the compute dtype; leaves already in it are returned as they are (so a
    float32 tree at float32 is unchanged, and bfloat16-stored leaves are widened for float32)."""
    return jax.tree_util.tree_map(lambda a: a if a.dtype == dtype else a.astype(dtype), params)


class Split(NamedTuple):
    stack_edits: dict
    block_edits: dict
    stack_capture: tuple
    block_capture: tuple


def split(family: Family, edits, capture, dims, n_tokens: int) -> Split:
    """Resolve one stack's edits (already :meth:`~Family.own`-ed); split edits and captures
    into whole-stack and per-block ones (the latter are scanned with the stacked parameters)."""
    edits = {k: resolve(v, k, family.shape(k, dims, n_tokens), family.n_layers(k, dims))
             for k, v in (edits or {}).items()}
    blocks = family.block_sites
    return Split({k: v for k, v in edits.items() if k not in blocks},
                 {k: v for k, v in edits.items() if k in blocks},
                 tuple(c for c in capture if c not in blocks),
                 tuple(c for c in capture if c in blocks))


def check_start(family: Family, stack: str, x, want: tuple, start_layer: int, edits, capture,
                dims) -> None:
    """Eager checks for a pass resumed at ``start_layer``: the input is one utterance's
    ``resid_pre`` there; nothing before it is edited or captured (an edit is inspected when it
    is concrete; inside an outer ``jit``/``vmap`` the caller guarantees it)."""
    n_layer = family.layers[stack](dims)
    if not 0 <= start_layer < n_layer:
        raise ValueError(f"start_layer must be in [0, {n_layer}), got {start_layer}")
    shape = tuple(jnp.shape(x))
    if len(shape) != 2 or shape[1] != want[1] or want[0] not in (None, shape[0]):
        raise ValueError(f"resid has shape {shape}, expected {want} (one utterance's resid_pre "
                         f"at start_layer)")
    before = [s for s in family.stacks[stack] if s not in family.block_sites][:1]  # the embedding
    for name in before:
        if name in (edits or {}) or name in capture:
            raise ValueError(f"{name} lies before start_layer; use the full pass for it")
    for name, edit in (edits or {}).items():
        if name not in family.block_sites:
            continue
        w = resolve(edit, name, family.shape(name, dims, shape[0]), family.n_layers(name, dims)).alpha
        if not isinstance(w, jax.core.Tracer) and bool(jnp.any(w[:start_layer] != 0)):
            raise ValueError(f"the edit of {name!r} touches a layer before start_layer={start_layer}; "
                             "start earlier or use the full pass")


def check_readout(family: Family, stack: str, readout, n_tokens: int, n_vocab: int, edits):
    """Eager checks of ``readout`` (the token ids wanted at each position, integer ``[T, k]``)
    -> the ids as int32 (None stays None). Ids are range-checked when concrete; the head's
    site (``logits``) then holds ``[T, k]``, so an edit of it is refused."""
    if readout is None:
        return None
    ids = jnp.asarray(readout)
    if ids.ndim != 2 or ids.shape[0] != n_tokens:
        raise ValueError(f"readout must be token ids [T, k] with T = {n_tokens} positions, got shape "
                         f"{tuple(ids.shape)} (ids[:, None] reads one id per position)")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"readout must hold integer token ids, got dtype {ids.dtype}")
    if not isinstance(ids, jax.core.Tracer) and ids.size:  # numpy: no jnp op inside a trace
        low, high = int(np.min(np.asarray(ids))), int(np.max(np.asarray(ids)))
        if low < 0 or high >= n_vocab:
            raise ValueError(f"readout ids must lie in [0, {n_vocab}), got {low}..{high}")
    head_site = family.stacks[stack][-1]
    if head_site in (edits or {}):
        raise ValueError(f"{head_site!r} cannot be edited with readout= (it then holds [T, k]); "
                         f"edit {family.stacks[stack][-2]!r} instead")
    return ids.astype(jnp.int32)


def read_out(x, table, ids, axis: int = 0):
    """Logits of only the token ids ``ids`` [T, k]: ``x`` [T, D] against the rows of the
    read-out matrix ``table`` (``[V, D]`` with ``axis=0``, a ``[D, V]`` kernel with ``axis=1``)
    -> [T, k] float32, the values ``take_along_axis(x @ table(.T), ids, -1)`` has, without the
    ``[T, V]`` product (a vmapped sweep never pays the vocabulary projection)."""
    rows = jnp.take(table, ids, axis=axis).astype(x.dtype)  # [T, k, D] or [D, T, k]
    spec = "td,tkd->tk" if axis == 0 else "td,dtk->tk"
    return jnp.einsum(spec, x, rows).astype(jnp.float32)


def run_blocks(block: Callable, blocks, x, *, prefix: str, edits: dict, capture: tuple, xs=None,
               unroll: bool = False, remat: bool = False):
    """``block(x, p_l, tap, xs_l) -> (x, out_l)`` over the layers -> (x, stacked captures, outs).

    ``remat``: each layer under ``jax.checkpoint``, so a backward pass keeps only the layers'
    inputs and recomputes each layer's internals (attention patterns) when it reaches it: the
    memory of a gradient through L layers falls to about one layer's, at one more forward pass.
    Forward values are unchanged; gradients agree to float32 rounding (XLA may fuse the
    recomputation differently).

    Scanned: ``blocks``, ``edits`` and ``xs`` carry a leading layer axis, ``outs`` come back
    stacked. Unrolled (``unroll`` or ``blocks`` a sequence of per-layer trees): ``xs`` is a
    sequence of per-layer trees (or None) and ``outs`` a list.
    """
    def body(x, layer):
        p_l, edits_l, xs_l = layer
        tap = Tap(prefix, edits_l, capture)
        x, out = block(x, p_l, tap, xs_l)
        return x, (tap.captured, out)

    if remat:
        body = jax.checkpoint(body)
    if not unroll and not isinstance(blocks, (tuple, list)):
        x, (stacked, outs) = jax.lax.scan(body, x, (blocks, edits, xs))
        return x, stacked, outs
    per_layer = layer_list(blocks)
    captured, outs = [], []
    for i, p_l in enumerate(per_layer):
        x, (cap, out) = body(x, (p_l, jax.tree_util.tree_map(lambda a: a[i], edits),
                                 None if xs is None else xs[i]))
        captured.append(cap)
        outs.append(out)
    return x, {k: jnp.stack([c[k] for c in captured]) for k in capture}, outs


def layer_list(blocks) -> tuple:
    """Stacked block parameters ``[L, ...]`` -> a tuple of per-layer trees (static slices)."""
    if isinstance(blocks, (tuple, list)):
        return tuple(blocks)
    n_layers = jax.tree_util.tree_leaves(blocks)[0].shape[0]
    return tuple(jax.tree_util.tree_map(lambda a, i=i: a[i], blocks) for i in range(n_layers))


def later(tree, start_layer: int, per_layer: bool):
    """Layers ``start_layer..`` of a per-layer sequence, or of a tree stacked ``[L, ...]``."""
    if per_layer:
        return tree[start_layer:]
    return jax.tree_util.tree_map(lambda a: a[start_layer:], tree)


def run_stack(family: Family, stack: str, params, inputs, *, dims, edits, capture, n_tokens: int,
              embed: Callable, block: Callable, head: Callable, start_layer: int | None = None,
              xs=None, unroll: bool = False, readout=None, remat: bool = False) -> tuple[Any, dict, Any]:
    """One stack (``stack``, the site prefix of its blocks): ``embed(inputs, tap) -> x`` (skipped
    when ``start_layer`` is given: ``inputs`` is then ``resid_pre[start_layer]``), the blocks
    of ``params["blocks"]`` from ``start_layer`` (:func:`run_blocks`), ``head(x, tap) -> y``
    (``head(x, tap, readout)`` when ``readout`` ids are given, see :func:`read_out`);
    ``remat``: each block rematerialised in a backward pass (:func:`run_blocks`).
    ``edits`` and ``capture`` are this stack's own (:meth:`Family.own`). Returns
    ``(y, acts, outs)``."""
    s = split(family, edits, capture, dims, n_tokens)
    tap = Tap("", s.stack_edits, s.stack_capture)
    blocks, block_edits = params["blocks"], s.block_edits
    per_layer = unroll or isinstance(blocks, (tuple, list))  # then xs is a per-layer sequence too
    if start_layer is not None:
        x = inputs
        blocks = later(blocks, start_layer, isinstance(blocks, (tuple, list)))
        block_edits = later(block_edits, start_layer, False)
        xs = None if xs is None else later(xs, start_layer, per_layer)
    else:
        x = embed(inputs, tap)
    x, stacked, outs = run_blocks(block, blocks, x, prefix=stack, edits=block_edits,
                                  capture=s.block_capture, xs=xs, unroll=per_layer, remat=remat)
    y = head(x, tap) if readout is None else head(x, tap, readout)
    return y, {**tap.captured, **stacked}, outs
