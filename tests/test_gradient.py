"""The Laplace log-likelihood's written-out gradient (``_gradient``, used by the fit driver)
equals JAX's derivative of ``laplace_loglik`` through the implicit-function rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm._place_rows import make_design
from jaxmm._families import get_family
from jaxmm._gradient import laplace_loglik_for_fit
from jaxmm._laplace import laplace_loglik
from jaxmm._params import Params

from conftest import central_differences, small_jit


def _problem(family, q, tile, seed):
    """Uneven groups (1-11 rows), prior weights, an offset, and L with correlations."""
    rng = np.random.default_rng(seed)
    m = 30
    g = np.repeat(np.arange(m), rng.integers(1, 12, m))
    n = g.size
    X = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])
    Z = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n)])[:, :q]
    eta = 0.2 + 0.3 * X[:, 1] + (Z * rng.normal(0, 0.6, (m, q))[g]).sum(1)
    mu = np.exp(eta)
    y = {"binomial": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float),
         "poisson": rng.poisson(mu).astype(float),
         "gamma": rng.gamma(2.0, mu / 2.0),
         "gaussian": eta + rng.normal(size=n),
         "negative_binomial": rng.poisson(mu * rng.gamma(2.0, 0.5, n)).astype(float)}[family]
    design, _, _ = make_design(X, Z, y, g, weights=rng.uniform(0.5, 2.0, n), offset=rng.normal(0, 0.1, n), tile=tile)
    chol = np.tril(rng.normal(0, 0.4, (q, q))) + 0.7 * np.eye(q)
    params = Params(jnp.array([0.1, 0.2, -0.1]), jnp.asarray(chol), jnp.asarray(1.3))
    return design, params


@pytest.mark.parametrize("family, link, q, tile", [
    ("binomial", "logit", 2, 4), ("binomial", "probit", 1, 4), ("binomial", "cloglog", 3, 1),
    ("poisson", "log", 3, 4), ("poisson", "log", 2, 1),
    ("gamma", "log", 2, 4), ("negative_binomial", "log", 1, 4), ("gaussian", "identity", 2, 4),
])
def test_written_gradient_equals_autodiff(family, link, q, tile):
    fam = get_family(family, link)
    design, params = _problem(family, q, tile, seed=q + 7 * tile)
    u0 = jnp.zeros((design.n_groups, q))

    def value_and_grad(objective):
        f = lambda b, c, s: objective(Params(b, c, s), design, u0, fam)[0]
        return small_jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(*params)

    v_ad, g_ad = value_and_grad(laplace_loglik)
    v_w, g_w = value_and_grad(laplace_loglik_for_fit)
    np.testing.assert_allclose(v_w, v_ad, rtol=1e-13)
    for name, a, b in zip(("beta", "chol", "dispersion"), g_w, g_ad):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * float(jnp.max(jnp.abs(b))), err_msg=name)
    if fam.n_dispersion:
        assert abs(float(g_ad[2])) > 1e-3  # the dispersion's gradient is exercised, not zero


def test_written_gradient_of_many_fixed_effects_equals_autodiff():
    """More fixed-effect columns than XLA lets one fused reduce return (1000): Xᵀr is then a
    product, and so is X β; the gradient is still the exact one."""
    fam = get_family("poisson", "log")
    design, params = _problem("poisson", 2, 4, seed=5)
    n, p = design.X.shape[0], 1005
    rng = np.random.default_rng(6)
    X = np.asarray(design.X)
    wide = jnp.asarray(np.column_stack([X, 0.05 * rng.normal(size=(n, p - X.shape[1])) * (X[:, :1] != 0)]))
    design = design._replace(X=wide)
    params = params._replace(beta=jnp.asarray(np.r_[np.asarray(params.beta), 0.01 * rng.normal(size=p - 3)]))
    u0 = jnp.zeros((design.n_groups, 2))

    def value_and_grad(objective):
        f = lambda b, c, s: objective(Params(b, c, s), design, u0, fam)[0]
        return small_jit(jax.value_and_grad(f, argnums=(0, 1)))(*params)

    v_ad, g_ad = value_and_grad(laplace_loglik)
    v_w, g_w = value_and_grad(laplace_loglik_for_fit)
    np.testing.assert_allclose(v_w, v_ad, rtol=1e-13)
    for name, a, b in zip(("beta", "chol"), g_w, g_ad):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * float(jnp.max(jnp.abs(b))), err_msg=name)


def test_written_gradient_at_a_singular_L():
    """On the boundary (a zero column of L) the gradient in that column is still exact:
    the driver's boundary phase and its saddle test read it there."""
    fam = get_family("binomial")
    design, params = _problem("binomial", 2, 4, seed=3)
    params = params._replace(chol=params.chol.at[1, 1].set(0.0).at[1, 0].set(0.0))
    u0 = jnp.zeros((design.n_groups, 2))
    # jitted: op by op, every operation of the solver's derivative compiled on its own (25 s)
    grads = [small_jit(jax.grad(lambda c: obj(params._replace(chol=c), design, u0, fam)[0]))(params.chol)
             for obj in (laplace_loglik, laplace_loglik_for_fit)]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-8, atol=1e-10)
    assert abs(float(grads[0][1, 1])) > 0 or abs(float(grads[0][1, 0])) > 0


@pytest.mark.parametrize("family, link, q, tile", [
    ("binomial", "logit", 2, 4), ("negative_binomial", "log", 1, 1), ("gamma", "log", 3, 4),
])
def test_exact_beta_hessian_equals_differences_of_the_gradient(family, link, q, tile):
    """Xᵀ(∂r/∂η)X from its diagonal and per-group parts (``beta_hessian``) equals central
    differences of the exact gradient in β (the modes re-solved at each point); tiled and
    untiled rows, with and without a dispersion, q = 1 to 3. (Against jax.hessian of
    ``laplace_loglik`` it agreed to 1e-8, but that program took 9-14 s to compile.)"""
    from jaxmm._gradient import beta_hessian
    from jaxmm._inner import InnerOptions, conditional_modes, linear_parts

    fam = get_family(family, link)
    design, params = _problem(family, q, tile, seed=11 + q)
    u0 = jnp.zeros((design.n_groups, q))
    eta_fixed, ZL = linear_parts(design, params.beta, params.chol)
    u = conditional_modes(eta_fixed, ZL, params.dispersion, design, u0, fam)
    exact = small_jit(lambda prm: beta_hessian(prm, design, u, fam, InnerOptions(max_iter=0)))(params)
    grad = small_jit(jax.grad(lambda b: laplace_loglik_for_fit(params._replace(beta=b), design, u0, fam)[0]))
    diffs = central_differences(lambda b: grad(jnp.asarray(b)), params.beta, 1e-5)
    np.testing.assert_allclose(exact, diffs, rtol=1e-6, atol=1e-7 * float(np.max(np.abs(diffs))))
    assert exact.shape == (3, 3) and np.max(np.abs(exact - np.diag(np.diag(exact)))) > 1e-3  # not diagonal
