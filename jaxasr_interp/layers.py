"""Pure building blocks of Whisper: layer norm, linear, conv, attention.

Numerics follow openai/whisper exactly: LayerNorm (eps 1e-5) and softmax are computed in float32
whatever the compute dtype; GELU is the exact erf form; queries and keys are each scaled by
``d_head ** -0.25`` before their product (the reference's way of applying 1/sqrt(d_head)).
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


def attention_pattern(q, k, mask=None):
    """Softmax attention weights [H, Tq, Tk] from q [Tq, H, dh] and k [Tk, H, dh].

    ``mask`` is boolean [Tq, Tk] (True = may attend) or None.
    """
    scale = q.shape[-1] ** -0.25
    scores = jnp.einsum("qhd,khd->hqk", (q * scale).astype(jnp.float32), (k * scale).astype(jnp.float32))
    if mask is not None:
        scores = jnp.where(mask[None], scores, -jnp.inf)
    return jax.nn.softmax(scores, axis=-1)


def attend(pattern, v):
    """Weighted values ``z`` [Tq, H, dh] from pattern [H, Tq, Tk] and v [Tk, H, dh]."""
    return jnp.einsum("hqk,khd->qhd", pattern.astype(v.dtype), v)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0):
    """openai/whisper's fixed encoder positions: [sin | cos] over log-spaced timescales."""
    import numpy as np
    log_timescale_increment = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2))
    scaled_time = np.arange(length)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], axis=1).astype(np.float32)
