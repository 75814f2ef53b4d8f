"""The probe solver's L-BFGS pieces against closed forms: the line search finds the minimiser
of a 1-D function, and the two-loop iteration solves a strongly convex quadratic."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxasr_interp.probes import solver as lbfgs


def test_line_search_finds_a_one_dimensional_minimum():
    # phi(a) = log(1 + exp(2 - 3 a)) + 0.5 * a^2, convex; phi'(0) < 0.
    def derivs(a):
        s = jax.nn.sigmoid(2 - 3 * a)
        return a - 3 * s, 9 * s * (1 - s) + 1.0

    alpha = float(lbfgs.line_search(derivs, iters=8))
    grid = np.linspace(0, 2, 200001)
    expected = grid[np.argmin(np.logaddexp(0, 2 - 3 * grid) + 0.5 * grid ** 2)]
    assert abs(alpha - expected) < 1e-4, (alpha, expected)


def test_iterations_solve_a_quadratic():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((12, 12))
    a = jnp.asarray(m @ m.T + 0.5 * np.eye(12), jnp.float32)  # condition number in the 100s
    b = jnp.asarray(rng.standard_normal(12), jnp.float32)
    theta, memory = jnp.zeros(12), lbfgs.empty(5, 12)
    g = a @ theta - b
    for _ in range(40):
        p = lbfgs.direction(memory, g)
        ap = a @ p
        alpha = lbfgs.line_search(lambda t: (jnp.vdot(g, p) + t * jnp.vdot(p, ap), jnp.vdot(p, ap)))
        theta = theta + alpha * p
        g_new = a @ theta - b
        memory, g = lbfgs.push(memory, alpha * p, g_new - g), g_new
    np.testing.assert_allclose(theta, np.linalg.solve(np.asarray(a, np.float64), np.asarray(b)), rtol=2e-3, atol=2e-3)
    # far fewer iterations than plain gradient descent would need at this conditioning
    assert float(jnp.abs(g).max()) < 1e-3
