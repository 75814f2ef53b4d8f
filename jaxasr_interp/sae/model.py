"""Sparse autoencoders as pure functions over a params pytree.

An SAE maps an activation ``x [d_in]`` to latents ``z [d_sae]`` and back::

    pre   = (x - b_dec) @ W_enc + b_enc        W_enc [d_in, d_sae], b_enc [d_sae]
    z     = act(pre)                           the kind's activation, below
    x_hat = z @ W_dec + b_dec                  W_dec [d_sae, d_in], rows of unit norm

``params = {"W_enc", "b_enc", "W_dec", "b_dec"}`` (plus ``"threshold" [d_sae]`` for
``batchtopk`` and ``jumprelu``): the SAELens layout and orientation, so conversion is a rename.
Functions take a batch ``x [B, d_in]``; ``jax.vmap`` stacks SAEs.

Kinds (:class:`SAEConfig` ``kind``):

==============  ============================================================================
``topk``        the ``k`` largest pre-activations of each row, ReLU'd (Gao et al. 2024)
``batchtopk``   training: the ``k * B`` largest ReLU'd pre-activations of a batch of ``B``
                rows; inference: a JumpReLU at the learned global threshold (Bussmann et al.
                2024; SAELens saves it as ``jumprelu`` the same way)
``relu``        ``relu(pre)`` with an L1 penalty ``l1 * sum(z)`` (the classic baseline; the
                decoder rows have unit norm, so the penalty needs no norm weighting)
``jumprelu``    ``relu(pre) * (pre > threshold)``: inference only (a SAELens file)
==============  ============================================================================

``k`` may be traced (one compiled program for several k's, ``jax.vmap``-ed): the top-k is taken
at the static ``k_max`` and ranks ``>= k`` are zeroed. The TopK decoder is sparse: ``x_hat`` is
a sum of ``k_max`` gathered decoder rows (:func:`sparse_decode`), which XLA fuses into one loop
instead of a ``[B, d_sae] x [d_sae, d_in]`` product with mostly zeros; in training
(:func:`topk_decode`) its backward is two dense products and elementwise selects, no scatter.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

KINDS = ("topk", "batchtopk", "relu", "jumprelu")
TRAINABLE = ("topk", "batchtopk", "relu")


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """One SAE: its shape and kind, where it reads (``site`` and model ``layer``), and how it
    trains. ``lr=None`` is OpenAI's rule ``2e-4 / sqrt(d_sae / 2**14)``; ``aux_k=None`` is
    ``d_in // 2`` (SAELens and Gao et al.); ``aux_coeff`` weighs the AuxK loss (1/32 as there)."""

    d_in: int
    d_sae: int
    kind: str = "topk"
    k: int = 32
    l1: float = 0.0
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    lr: float | None = None
    seed: int = 0
    site: str = ""
    layer: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in ("topk", "batchtopk") and not 0 < self.k <= self.d_sae:
            raise ValueError(f"k must be in 1..d_sae={self.d_sae}, got {self.k}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / (self.d_sae / 2 ** 14) ** 0.5

    @property
    def k_aux(self) -> int:
        return min(self.d_sae, self.aux_k if self.aux_k is not None else max(1, self.d_in // 2))

    @property
    def expansion(self) -> float:
        return self.d_sae / self.d_in


def init_params(key, d_in: int, d_sae: int, b_dec=None) -> dict:
    """Unit-norm random decoder rows, the encoder its transpose (Gao et al.), zero encoder
    bias; ``b_dec`` from the data when given (see :func:`geometric_median`)."""
    w = jax.random.normal(key, (d_sae, d_in), jnp.float32)
    w = w / jnp.linalg.norm(w, axis=-1, keepdims=True)
    b = jnp.zeros((d_in,), jnp.float32) if b_dec is None else jnp.asarray(b_dec, jnp.float32)
    return {"W_enc": w.T, "b_enc": jnp.zeros((d_sae,), jnp.float32), "W_dec": w, "b_dec": b}


def pre_acts(params, x):
    return (x - params["b_dec"]) @ params["W_enc"] + params["b_enc"]


def pre_acts_train(params, x):
    """:func:`pre_acts` as ``x @ W_enc - b_dec @ W_enc + b_enc`` (equal up to rounding): with
    ``x`` constant, the gradient for ``b_dec`` is then a vector-matrix product, where
    ``(x - b_dec) @ W_enc`` would cost a full ``[B, d_sae] x [d_sae, d_in]`` one."""
    return x @ params["W_enc"] - params["b_dec"] @ params["W_enc"] + params["b_enc"]


def topk_latents(pre, k, k_max: int):
    """Values ``[B, k_max]`` (ReLU'd, zero from rank ``k`` on) and latent indices of the top
    ``k`` pre-activations of each row."""
    # The barrier keeps XLA from merging the column slices of the sparse decoder into the
    # top-k's own slice: the CPU backend then no longer recognises a top-k and sorts whole rows
    # (a 4096 x 3072 sort took 30x the top-k).
    vals, idx = jax.lax.optimization_barrier(jax.lax.top_k(pre, k_max))
    return jnp.where(jnp.arange(k_max) < k, jax.nn.relu(vals), 0.0), idx


def densify(vals, idx, d_sae: int):
    """``[B, d_sae]`` latents from ``(vals, idx)`` of :func:`topk_latents`."""
    rows = jnp.arange(vals.shape[0])[:, None]
    return jnp.zeros((vals.shape[0], d_sae), vals.dtype).at[rows, idx].set(vals)


def sparse_decode(vals, idx, w_dec):
    """``densify(vals, idx) @ w_dec`` as a sum of gathered rows (one fused loop on CPU)."""
    w_dec = jnp.asarray(w_dec)
    return sum(vals[:, j, None] * w_dec.at[idx[:, j]].get(mode="promise_in_bounds")
               for j in range(vals.shape[1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def topk_decode(pre, w_dec, k, k_max: int):
    """The top-``k`` latents of ``pre`` decoded (without ``b_dec``), with their values and
    indices: ``(x_hat - b_dec, vals, idx)``. Differentiable in ``pre`` and ``w_dec`` through
    the first output only (the values and indices are for counting)."""
    return _topk_decode_fwd(pre, w_dec, k, k_max)[0]


def _topk_decode_fwd(pre, w_dec, k, k_max):
    raw, idx = jax.lax.optimization_barrier(jax.lax.top_k(pre, k_max))  # see topk_latents
    vals = jnp.where(jnp.arange(k_max) < k, jax.nn.relu(raw), 0.0)
    kth = jnp.take(raw, k - 1, axis=-1)
    return (sparse_decode(vals, idx, w_dec), vals, idx), (pre, w_dec, kth)


def _topk_decode_bwd(k_max, res, cotangents):
    # The kept latents as a dense mask: the backward is two dense products and elementwise
    # selects, where autodiff of the top-k and the gathers would be scatters (slow on CPU).
    pre, w_dec, kth = res
    g = cotangents[0]
    kept = (pre >= kth[:, None]) & (pre > 0)
    return jnp.where(kept, g @ w_dec.T, 0.0), jnp.where(kept, pre, 0.0).T @ g, None


topk_decode.defvjp(_topk_decode_fwd, _topk_decode_bwd)


def batchtopk_latents(pre, k, k_max: int):
    """Training latents of BatchTopK: the ``k * B`` largest ReLU'd pre-activations of the
    batch, and the smallest kept value (the threshold's running-average target)."""
    acts = jax.nn.relu(pre)
    n = pre.shape[0]
    top = jax.lax.top_k(acts.reshape(-1), k_max * n)[0]
    kth = top[k * n - 1]
    z = jnp.where((acts >= kth) & (acts > 0), acts, 0.0)
    return z, kth


def jumprelu(pre, threshold):
    return jnp.where(pre > threshold, jax.nn.relu(pre), 0.0)


def encode(params, x, cfg: SAEConfig):
    """Inference latents ``[B, d_sae]`` (BatchTopK: the JumpReLU at ``params["threshold"]``)."""
    pre = pre_acts(params, x)
    if cfg.kind == "topk":
        return densify(*topk_latents(pre, cfg.k, cfg.k), cfg.d_sae)
    if cfg.kind in ("batchtopk", "jumprelu"):
        return jumprelu(pre, params["threshold"])
    return jax.nn.relu(pre)


def decode(params, z):
    return z @ params["W_dec"] + params["b_dec"]


def reconstruct(params, x, cfg: SAEConfig):
    """``x_hat [B, d_in]`` at inference (sparse decoder for TopK)."""
    if cfg.kind == "topk":
        vals, idx = topk_latents(pre_acts(params, x), cfg.k, cfg.k)
        return sparse_decode(vals, idx, params["W_dec"]) + params["b_dec"]
    return decode(params, encode(params, x, cfg))


def nmse(x, x_hat):
    """Normalised MSE: squared error over the batch's variance about its mean (the batch's FVU)."""
    return jnp.sum((x_hat - x) ** 2) / jnp.maximum(jnp.sum((x - x.mean(0)) ** 2), 1e-12)


def aux_loss(params, pre, err, dead, k_aux, k_aux_max: int):
    """AuxK (Gao et al.): the top ``k_aux`` dead latents reconstruct the main reconstruction's
    error ``err`` (a constant here); scaled by ``min(n_dead / k_aux, 1)`` as in SAELens."""
    e_hat = topk_decode(jnp.where(dead, pre, -jnp.inf), params["W_dec"], k_aux, k_aux_max)[0]
    scale = jnp.minimum(dead.sum() / k_aux, 1.0)
    return scale * nmse(jax.lax.stop_gradient(err), e_hat)


def geometric_median(x, iters: int = 30, eps: float = 1e-6):
    """Weiszfeld's iterations from the mean: the point minimising the summed distance to the
    rows of ``x [n, d]`` (SAELens' ``b_dec`` initialisation)."""
    def step(m, _):
        w = 1.0 / jnp.maximum(jnp.linalg.norm(x - m, axis=-1), eps)
        return (w[:, None] * x).sum(0) / w.sum(), None
    return jax.lax.scan(step, x.mean(0), None, length=iters)[0]


def unit_rows(w):
    return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-12)


def project_out_radial(grad_w, w):
    """The decoder gradient without its component along each (unit) row: the step then keeps
    the norm to first order, and the renormalisation after it removes only the rest."""
    return grad_w - jnp.sum(grad_w * w, axis=-1, keepdims=True) * w


def fold_scale(params, scale):
    """Params trained on ``x * scale`` -> the same SAE on raw ``x``: biases and threshold divide
    by ``scale``, the unit-norm decoder stays, latents come out divided by ``scale``."""
    out = dict(params)
    for name in ("b_enc", "b_dec", "threshold"):
        if name in out:
            out[name] = out[name] / scale
    return out
