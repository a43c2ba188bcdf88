"""The array-level API (issue 10): jaxmm.design, marginal_loglik and conditional_modes as
pure JAX functions: equal to fit() at its estimates, exact gradients in params and in the
offset, jit without retracing, vmap equal to a loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.errors import ArgumentError, DataError

from conftest import DATA, REFERENCE_CASES, central_differences, small_jit


@pytest.mark.parametrize("name", REFERENCE_CASES)
def test_marginal_loglik_at_the_estimates_equals_the_fit(reference_fit, name):
    _, _, res = reference_fit(name)
    f = small_jit(lambda prm, d: jaxmm.marginal_loglik(prm, d, family=res.family, link=res.link, method=res.method))
    assert float(f(res.params, res.design)) == pytest.approx(res.loglik, abs=1e-7 * (1 + abs(res.loglik)))


@pytest.mark.parametrize("name", ["cbpp_binomial", "sleepstudy_reml", "contraception_q2"])
def test_conditional_modes_equal_the_fit(reference_fit, name):
    _, _, res = reference_fit(name)
    b, cond_var = jaxmm.conditional_modes(res.params, res.design, family=res.family, link=res.link)
    slots = res.layout.group_slot
    np.testing.assert_allclose(np.asarray(b)[slots], res.ranef.to_numpy(), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.asarray(cond_var)[slots], res.cond_var, rtol=1e-6, atol=1e-12)


def _flat(params):
    return np.concatenate([np.ravel(params[0]), np.asarray(params[1])[np.tril_indices(params[1].shape[0])],
                           np.ravel(params[2])])


def _unflat(v, p, q):
    rows, cols = np.tril_indices(q)
    chol = jnp.zeros((q, q), v.dtype).at[rows, cols].set(v[p:p + rows.size])
    return jaxmm.Params(v[:p], chol, v[-1])


@pytest.mark.parametrize("name", ["contraception_q2", "sleepstudy_ml", "sleepstudy_reml", "grouseticks_poisson"])
def test_gradients_equal_finite_differences(reference_fit, name):
    _, _, res = reference_fit(name)
    p, q = len(res.beta), res.D.shape[0]
    kw = dict(family=res.family, link=res.link, method=res.method)
    design = res.design
    # away from the optimum, where the gradient is not ~0
    x0 = _flat(res.params)
    x0 = x0 + 0.03 * np.cos(np.arange(x0.size) + 1.0) * (1.0 + np.abs(x0))
    loglik = lambda v, off: jaxmm.marginal_loglik(_unflat(v, p, q), design._replace(offset=off), **kw)
    f = small_jit(loglik)
    off0 = jnp.asarray(design.offset)
    g_params, g_offset = small_jit(jax.grad(loglik, argnums=(0, 1)))(jnp.asarray(x0), off0)
    g_params, g_offset = np.asarray(g_params), np.asarray(g_offset)
    # ℓ is only known to ~1e-11 (see the offset below), and on a GPU its group sums add up in
    # arrival order: central differences with a step of 1e-6 left a rounding error of 4.8e-6
    # there (a GPU, sleepstudy ML), above the tolerance. A step of 1e-4 divides that error by
    # 100, and Richardson's extrapolation from h and h/2 cancels the h² truncation term.
    h = 1e-4 * (1.0 + np.abs(x0))

    fd = central_differences(lambda v: float(f(jnp.asarray(v), off0)), x0, h, richardson=True)
    scale = np.max(np.abs(fd))
    np.testing.assert_allclose(g_params, fd, rtol=1e-5, atol=1e-5 * scale)
    assert scale > 0.1  # not vacuous: away from the optimum
    # the offset: a directional derivative along a random direction over the real rows
    rng = np.random.default_rng(0)
    direction = rng.normal(size=off0.shape) * (np.asarray(design.weights) > 0)
    # ℓ (about −872 for sleepstudy REML) is only known to ~1e-11, so a step of 1e-6 left a
    # rounding error in the difference (4.5e-6) as large as the tolerance; with 1e-4 the
    # truncation error stays below 1e-8 (exactly 0 for gaussian models, quadratic in the offset).
    eps = 1e-4
    fd_dir = (float(f(jnp.asarray(x0), off0 + eps * direction)) - float(f(jnp.asarray(x0), off0 - eps * direction))) \
        / (2 * eps)
    assert float(g_offset @ direction) == pytest.approx(fd_dir, rel=1e-5, abs=1e-6 * np.abs(g_offset).sum())


def test_jit_does_not_retrace_and_vmap_equals_a_loop(reference_fit):
    _, _, res = reference_fit("cbpp_binomial")
    traces = []

    def value(prm, d):
        traces.append(1)
        return jaxmm.marginal_loglik(prm, d, family="binomial")

    f = small_jit(value)
    f(res.params, res.design)
    shifted = res.params._replace(beta=res.params.beta + 0.1)
    f(shifted, res.design)
    assert len(traces) == 1
    # a batch of 5 parameter sets
    betas = np.asarray(res.params.beta)[None] + 0.05 * np.arange(5)[:, None]
    chols = np.asarray(res.params.chol)[None] * (1.0 + 0.1 * np.arange(5))[:, None, None]
    batch = jaxmm.Params(jnp.asarray(betas), jnp.asarray(chols), jnp.ones(5))
    vmapped = np.asarray(small_jit(jax.vmap(lambda prm: jaxmm.marginal_loglik(prm, res.design, family="binomial")))(batch))
    looped = np.array([float(f(jaxmm.Params(betas[i], chols[i], 1.0), res.design)) for i in range(5)])
    np.testing.assert_allclose(vmapped, looped, rtol=1e-12)
    assert np.ptp(looped) > 1.0


def test_design_from_arrays_equals_the_formula_design(reference_fit):
    """Shuffled rows, labels as strings, the offset placed with row_order: the same likelihood."""
    _, data, res = reference_fit("sleepstudy_ml")
    rng = np.random.default_rng(3)
    data = data.iloc[rng.permutation(len(data))].reset_index(drop=True)
    X = np.column_stack([np.ones(len(data)), data["Days"]])
    groups = data["Subject"].astype(str).to_numpy()
    offset = 0.5 * np.sin(data["Days"].to_numpy())
    d = jaxmm.design(X, X, data["Reaction"].to_numpy() + offset, groups)
    d = d._replace(offset=jnp.asarray(offset)[jaxmm.row_order(groups)])
    assert float(jaxmm.marginal_loglik(res.params, d, family="gaussian", method="ML")) == pytest.approx(res.loglik,
                                                                                                     abs=1e-8)
    b, _ = jaxmm.conditional_modes(res.params, d, family="gaussian")
    labels = np.unique(groups)
    frame = pd.DataFrame(np.asarray(b), index=labels).loc[[str(g) for g in res.ranef.index]]
    np.testing.assert_allclose(frame.to_numpy(), res.ranef.to_numpy(), rtol=1e-6)


def test_quadrature_through_the_array_api():
    data = pd.read_csv(DATA / "cbpp_binomial.csv")
    res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", data, "binomial", trials="size", nAGQ=9)
    value = jaxmm.marginal_loglik(res.params, res.design, family="binomial", nAGQ=9)
    assert float(value) == pytest.approx(res.loglik, abs=1e-8)
    laplace = jaxmm.marginal_loglik(res.params, res.design, family="binomial")
    assert abs(float(value) - float(laplace)) > 0.01


def test_input_errors_name_the_argument(reference_fit):
    _, _, res = reference_fit("cbpp_binomial")
    bad = res.params._replace(beta=np.zeros(3))
    with pytest.raises(ArgumentError, match="params.beta"):
        jaxmm.marginal_loglik(bad, res.design, family="binomial")
    with pytest.raises(ArgumentError, match="params.chol"):
        jaxmm.marginal_loglik(res.params._replace(chol=np.eye(2)), res.design, family="binomial")
    with pytest.raises(ArgumentError, match="method"):
        jaxmm.marginal_loglik(res.params, res.design, family="binomial", method="REML")
    with pytest.raises(ArgumentError, match="nAGQ"):
        jaxmm.marginal_loglik(res.params, res.design, family="binomial", nAGQ=0)
    with pytest.raises(DataError, match="same number of rows"):
        jaxmm.design(np.ones((5, 1)), np.ones((4, 1)), np.zeros(5), np.arange(5))
    with pytest.raises(ArgumentError, match="dtype"):
        jaxmm.design(np.ones((5, 1)), np.ones((5, 1)), np.zeros(5), np.arange(5), dtype="float16")
