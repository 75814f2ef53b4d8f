"""Pure building blocks of Whisper: layer norm, linear, conv, attention.

Numerics follow openai/whisper exactly: LayerNorm (eps 1e-5) and softmax are computed in float32
whatever the compute dtype; GELU is the exact erf form; attention scores are scaled by 1/sqrt(d_head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LN_EPS = 1e-5


def layer_norm(x, p):
    dtype = x.dtype
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + LN_EPS)
    return (y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(dtype)


def linear(x, p):
    y = x @ p["kernel"].astype(x.dtype)
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    return y


def conv1d(x, p, stride: int):
    """Width-3 'same' conv over time. ``x``: [T, C_in] -> [T // stride, C_out]."""
    y = jax.lax.conv_general_dilated(
        x[None], p["kernel"].astype(x.dtype), window_strides=(stride,), padding=((1, 1),),
        dimension_numbers=("NWC", "WIO", "NWC"))[0]
    return y + p["bias"].astype(x.dtype)


def gelu(x):
    return jax.nn.gelu(x, approximate=False)


def split_heads(x, n_head: int):
    """[T, D] -> [T, H, D / H]."""
    return x.reshape(x.shape[:-1] + (n_head, x.shape[-1] // n_head))


def head_major(x):
    """[T, H, dh] -> [H, T, dh]: keys and values are kept head-major for the attention
    products, which XLA's CPU backend runs several times faster in that layout."""
    return jnp.swapaxes(x, 0, 1)


def attention_pattern(q, k_hm, mask=None):
    """Softmax attention weights [H, Tq, Tk] from q [Tq, H, dh] and head-major keys [H, Tk, dh].

    ``mask`` is boolean [Tq, Tk] (True = may attend) or None.
    """
    # openai/whisper scales q and k by dh ** -0.25 each; scaling q alone by dh ** -0.5 (as
    # transformers does) is the same product without a scaled copy of every cached key.
    scores = jnp.einsum("hqd,hkd->hqk", head_major(q * q.shape[-1] ** -0.5).astype(jnp.float32),
                        k_hm.astype(jnp.float32))
    if mask is not None:
        scores = jnp.where(mask[None], scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def attend(pattern, v_hm):
    """Weighted values ``z`` [Tq, H, dh] from pattern [H, Tq, Tk] and head-major v [H, Tk, dh]."""
    return head_major(jnp.einsum("hqk,hkd->hqd", pattern.astype(v_hm.dtype), v_hm))
