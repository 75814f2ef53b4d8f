"""One linear probe, fitted inside the compiled sweep: L2-penalised logistic regression
(softmax for more classes) on standardised features, solved by L-BFGS (:mod:`.solver`) with an
exact line search in logit space. :func:`fit_probe` is vmapped over every probe of a layer by
:mod:`.sweep`.

The parameters, gradients, solver memory and line search are float32 whatever the features'
dtype; bfloat16 features enter only the matrix products with them (:func:`_dot`: the other
operand rounded to bfloat16, float32 accumulation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxasr_interp.probes import solver as lbfgs

_MEMORY = 8  # L-BFGS pairs kept per probe


def fit_probe(x, xt, y, train, class_ok, l2, *, max_iter, tol):
    """One probe: x [n, d] and its transpose xt [d, n] (both shared by every probe of a layer),
    y [n], train [n] bool, class_ok [C] (C == 1: binary with one logit) -> predicted class of
    every item [n].

    L-BFGS (:mod:`.solver`) on the flat parameters ``[w.ravel(), b]`` with an exact line search
    in logit space: the logits are linear in the parameters, so the logits along a direction
    cost one matrix product and every trial step is elementwise. An iteration is two matrix
    products (the direction's logits, the gradient), as cheap as a gradient step; the loop
    stops when the largest gradient entry is at most ``tol`` or after ``max_iter`` iterations."""
    dt = jnp.float32
    d, n_cols = x.shape[1], class_ok.shape[0]
    logits_of, probs, grad, target, w_train, penalty, unflat = _objective(x, xt, y, train, class_ok, l2)
    binary = n_cols == 1

    def step_length(z, q, theta, p):
        w, p_w = unflat(theta)[0], unflat(p)[0]
        w_dot, pp = jnp.vdot(w, p_w), jnp.vdot(p_w, p_w)

        def derivs(alpha):
            prob = probs(z + alpha * q)
            pq = (prob * q).sum(-1)
            d1 = w_train @ ((prob - target) * q).sum(-1) + penalty * (w_dot + alpha * pp)
            curv = (prob * (1 - prob) * jnp.square(q)).sum(-1) if binary else (prob * jnp.square(q)).sum(-1) - jnp.square(pq)
            return d1, w_train @ curv + penalty * pp

        return lbfgs.line_search(derivs)

    def active(carry):
        i, _, _, g, _ = carry
        return (i < max_iter) & (jnp.abs(g).max() > tol)

    def iteration(carry):
        i, theta, z, g, memory = carry
        p = lbfgs.direction(memory, g)
        q = logits_of(p)                                                 # logits along p
        alpha = step_length(z, q, theta, p)
        theta, z = theta + alpha * p, z + alpha * q
        g_new = grad(z, theta)
        return i + 1, theta, z, g_new, lbfgs.push(memory, alpha * p, g_new - g)

    theta = jnp.zeros((d + 1) * n_cols, dt)
    z = jnp.zeros((x.shape[0], n_cols), dt)
    carry = (0, theta, z, grad(z, theta), lbfgs.empty(_MEMORY, theta.shape[0], dt))
    theta = jax.lax.while_loop(active, iteration, carry)[1]
    z = logits_of(theta)
    return (z[:, 0] > 0).astype(jnp.int32) if binary else jnp.argmax(jnp.where(class_ok, z, -jnp.inf), axis=-1)


def _dot(a, b):
    """``a @ b`` in float32: float32 features as they are; bfloat16 features with ``b`` rounded to
    bfloat16 and the products accumulated in float32."""
    if a.dtype == jnp.float32:
        return a @ b
    return jnp.matmul(a, b.astype(a.dtype), preferred_element_type=jnp.float32)


def _objective(x, xt, y, train, class_ok, l2):
    """The L2-penalised logistic objective of one probe on standardised features, as closures
    over the flat parameters: logits, probabilities, gradient, and what the line search needs."""
    dt = jnp.float32
    d, n_cols = x.shape[1], class_ok.shape[0]
    w_train = train.astype(dt) / train.sum()
    mu = _dot(xt, w_train)
    sd = jnp.sqrt(jnp.maximum(_dot(jnp.square(xt), w_train) - jnp.square(mu), 0.0))
    # Constant features get weight 0 through inv_sd = 0: standardised they are 0 anyway.
    inv_sd = jnp.where(sd > 1e-6 * (1.0 + jnp.abs(mu)), 1.0 / jnp.maximum(sd, 1e-30), 0.0)
    binary = n_cols == 1
    # A binary target inside a softmax sweep: two columns share the penalty of one weight
    # vector, so doubling it keeps the objective equal to scikit-learn's binary one.
    penalty = l2 if binary else l2 * jnp.where(class_ok.sum() == 2, 2.0, 1.0)
    target = y.astype(dt)[:, None] if binary else jax.nn.one_hot(y, n_cols, dtype=dt)
    unflat = lambda theta: (theta[: d * n_cols].reshape(d, n_cols), theta[d * n_cols:])

    def logits_of(theta):
        w, b = unflat(theta)
        return _dot(x, w * inv_sd[:, None]) + (b - (mu * inv_sd) @ w)

    def probs(z):  # absent classes (class_ok False) get probability 0 and never win
        return jax.nn.sigmoid(z) if binary else jax.nn.softmax(jnp.where(class_ok, z, -1e9), axis=-1)

    def grad(z, theta):
        w, _ = unflat(theta)
        r = (probs(z) - target) * w_train[:, None]                      # d loss / d z
        r_sum = r.sum(0)
        g_w = inv_sd[:, None] * (_dot(xt, r) - mu[:, None] * r_sum[None, :]) + penalty * w
        return jnp.concatenate([g_w.reshape(-1), r_sum])

    return logits_of, probs, grad, target, w_train, penalty, unflat
