"""A small L-BFGS for vmapped batches of smooth convex problems on flat parameter vectors.

Written for the probe sweep (:mod:`.probes`), where every probe is one instance under
``vmap``: the memory is a fixed-size buffer, newest pair first, so the two-loop recursion is a
short unrolled sequence of dot products with no data-dependent control flow, and the line
search is a fixed number of safeguarded Newton steps on the 1-D restriction of the objective,
which the caller supplies cheaply (for a linear model the logits along a direction cost one
matrix product, and every trial step after that is elementwise).

``Memory`` holds ``s`` (parameter steps) and ``y`` (gradient changes), each ``[m, D]``, and
``rho = 1 / (s . y)`` ``[m]``; an empty slot has ``rho = 0`` and drops out of the recursion.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Memory(NamedTuple):
    s: jax.Array
    y: jax.Array
    rho: jax.Array


def empty(size: int, dim: int, dtype=jnp.float32) -> Memory:
    return Memory(jnp.zeros((size, dim), dtype), jnp.zeros((size, dim), dtype), jnp.zeros((size,), dtype))


def push(memory: Memory, s: jax.Array, y: jax.Array) -> Memory:
    """Add the newest pair; a pair without positive curvature is stored as an empty slot."""
    sy = jnp.vdot(s, y)
    rho = jnp.where(sy > 1e-12 * jnp.sqrt(jnp.vdot(s, s) * jnp.vdot(y, y)), 1.0 / sy, 0.0)
    shift = lambda buf, new: jnp.concatenate([new[None], buf[:-1]])
    return Memory(shift(memory.s, s), shift(memory.y, y), shift(memory.rho, rho))


def direction(memory: Memory, grad: jax.Array) -> jax.Array:
    """The quasi-Newton descent direction ``-H grad`` (two-loop recursion; ``H`` starts as
    ``(s . y) / (y . y)`` times the identity of the newest pair, the identity when empty)."""
    q, alphas = grad, []
    for i in range(memory.rho.shape[0]):
        a = memory.rho[i] * jnp.vdot(memory.s[i], q)
        q = q - a * memory.y[i]
        alphas.append(a)
    yy = jnp.vdot(memory.y[0], memory.y[0])
    gamma = jnp.where(memory.rho[0] > 0, 1.0 / jnp.maximum(memory.rho[0] * yy, 1e-30), 1.0)
    r = gamma * q
    for i in reversed(range(memory.rho.shape[0])):
        b = memory.rho[i] * jnp.vdot(memory.y[i], r)
        r = r + (alphas[i] - b) * memory.s[i]
    return -r


def line_search(phi_derivs, iters: int = 3) -> jax.Array:
    """Step length minimising a convex 1-D function ``phi`` along a descent direction
    (``phi'(0) < 0``); ``phi_derivs(alpha)`` returns ``(phi'(alpha), phi''(alpha))``.

    Newton steps from ``alpha = 1`` are kept inside the bracket ``[lo, hi]`` with
    ``phi'(lo) < 0 <= phi'(hi)``: a step that leaves it is replaced by bisection, or by
    doubling while no upper end is known. Falls back to ``lo`` (a point of descent)."""

    def body(_, carry):
        alpha, lo, hi = carry
        d1, d2 = phi_derivs(alpha)
        lo, hi = jnp.where(d1 < 0, alpha, lo), jnp.where(d1 < 0, hi, alpha)
        newton = alpha - d1 / jnp.maximum(d2, 1e-30)
        fallback = jnp.where(jnp.isfinite(hi), 0.5 * (lo + hi), 2.0 * alpha)
        return jnp.where((newton > lo) & (newton < hi), newton, fallback), lo, hi

    one = jnp.ones((), jnp.float32)
    alpha, lo, _ = jax.lax.fori_loop(0, iters, body, (one, 0.0 * one, jnp.inf * one))
    return jnp.where(jnp.isfinite(alpha) & (alpha > 0), alpha, lo)
