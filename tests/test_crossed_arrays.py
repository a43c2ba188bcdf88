"""The array API with several random-effect terms: ``jaxmm.design`` with a list of Z blocks and
grouping arrays, ``marginal_loglik`` and ``conditional_modes`` at given parameters. They equal
``fit``'s log-likelihood and BLUPs at its estimate (exact LMM, REML and ML, with weights;
Laplace), and keep the JAX invariants: gradients equal finite differences (in the parameters
and in the offset), vmapped equals looped, a second call does not retrace."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import jaxmm
from jaxmm.errors import ArgumentError

from conftest import DATA

CROSSED = DATA / "crossed"
PEN = pd.read_csv(CROSSED / "penicillin_crossed_reml.csv")
FORMULA = "diameter ~ 1 + (1 | plate) + (1 | sample)"


def _pen_design(labels=("plate", "sample"), **kw):
    n = len(PEN)
    return jaxmm.design(np.ones((n, 1)), [np.ones((n, 1)), np.ones((n, 1))], PEN["diameter"].to_numpy(),
                        [PEN[g].to_numpy() for g in labels], **kw)


def _params(res, labels):
    chol = {t.label: c for t, c in zip(res.terms, res.chols)}
    return res.fixef.to_numpy(), [chol[g] for g in labels], 1.0 if res.sigma is None else res.sigma


@pytest.mark.parametrize("method,labels", [("REML", ("plate", "sample")), ("ML", ("sample", "plate"))])
def test_lmm_loglik_and_modes_equal_the_fit(method, labels):
    res = jaxmm.fit(FORMULA, PEN, method=method)
    params = _params(res, labels)
    design = _pen_design(labels)
    assert float(jaxmm.marginal_loglik(params, design, method=method)) == pytest.approx(res.loglik, abs=1e-9)
    # float32 rows hold Penicillin's whole-number diameters exactly, and the sums are float64
    low = _pen_design(labels, dtype="float32")
    assert low.rows.y.dtype == jnp.float32
    assert float(jaxmm.marginal_loglik(params, low, method=method)) == pytest.approx(res.loglik, abs=1e-9)
    b, cond = jaxmm.conditional_modes(params, design)
    # in the given order, not the engine's (the factor with the most levels, plate, first)
    for k, g in enumerate(labels):
        np.testing.assert_allclose(b[k], res.ranef[g].to_numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(cond[k], res.cond_var[g], rtol=1e-9)


def test_weighted_lmm_equals_the_weighted_fit():
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(PEN))
    res = jaxmm.fit(FORMULA, PEN.assign(w=w), weights="w", method="ML")
    ll = jaxmm.marginal_loglik(_params(res, ["plate", "sample"]), _pen_design(weights=w), method="ML")
    assert float(ll) == pytest.approx(res.loglik, abs=1e-9)


@pytest.fixture(scope="module")
def cbpp():
    data = pd.read_csv(CROSSED / "cbpp_observation_level.csv")
    ref = json.loads((CROSSED / "cbpp_observation_level.json").read_text())
    res = jaxmm.fit(ref["formula"], data, family="binomial", trials="size")
    period = data["period"].to_numpy()
    X = np.column_stack([np.ones(len(data))] + [(period == k).astype(float) for k in (2, 3, 4)])
    n = len(data)
    design = jaxmm.design(X, [np.ones((n, 1)), np.ones((n, 1))], data["incidence"].to_numpy(),
                          [data["herd"].to_numpy(), data["obs"].to_numpy()], trials=data["size"].to_numpy())
    return res, design


def test_laplace_loglik_and_modes_equal_the_fit(cbpp):
    res, design = cbpp
    params = _params(res, ["herd", "obs"])
    assert float(jaxmm.marginal_loglik(params, design, family="binomial")) == pytest.approx(res.loglik, abs=1e-8)
    b, cond = jaxmm.conditional_modes(params, design, family="binomial")
    np.testing.assert_allclose(b[0], res.ranef["herd"].to_numpy(), atol=1e-7)
    np.testing.assert_allclose(cond[1], res.cond_var["obs"], rtol=1e-6)


def _fd_check(f, x, h=1e-5, rtol=1e-5):
    g = np.asarray(jax.grad(f)(x))
    x = np.asarray(x, float)
    for k in range(x.size):
        e = np.zeros_like(x)
        e.flat[k] = h
        fd = (float(f(jnp.asarray(x + e))) - float(f(jnp.asarray(x - e)))) / (2 * h)
        assert g.flat[k] == pytest.approx(fd, rel=rtol, abs=1e-6), k


def test_laplace_gradient_equals_finite_differences(cbpp):
    res, design = cbpp
    beta, chols, _ = _params(res, ["herd", "obs"])

    def f(x):  # β then the two SDs
        return jaxmm.marginal_loglik((x[:4], [x[4:5].reshape(1, 1), x[5:6].reshape(1, 1)], 1.0), design,
                                     family="binomial")

    _fd_check(f, jnp.concatenate([jnp.asarray(beta), chols[0][0], chols[1][0]]))


def test_lmm_gradient_in_the_offset_equals_finite_differences():
    res = jaxmm.fit(FORMULA, PEN, method="ML")
    params = _params(res, ["plate", "sample"])
    design = _pen_design()
    f = lambda o: jaxmm.marginal_loglik(params, design._replace(offset=o), method="ML")
    g = np.asarray(jax.grad(f)(jnp.zeros(len(PEN))))
    for k in (0, 50, 143):
        e = np.zeros(len(PEN))
        e[k] = 1e-4
        fd = (float(f(jnp.asarray(e))) - float(f(jnp.asarray(-e)))) / 2e-4
        assert g[k] == pytest.approx(fd, rel=1e-6)


def test_vmapped_equals_looped_and_a_second_call_does_not_retrace():
    res = jaxmm.fit(FORMULA, PEN, method="ML")
    beta, chols, sigma = _params(res, ["plate", "sample"])
    design = _pen_design()
    traces = []

    @jax.jit
    def ll(s1, s2):
        traces.append(1)
        return jaxmm.marginal_loglik((beta, [s1.reshape(1, 1), s2.reshape(1, 1)], sigma), design, method="ML")

    s1 = jnp.asarray([0.5, 0.8, 1.1])
    s2 = jnp.asarray([1.5, 2.0, 2.5])
    looped = [float(ll(a, b)) for a, b in zip(s1, s2)]
    assert len(traces) == 1
    np.testing.assert_allclose(jax.vmap(ll)(s1, s2), looped, rtol=1e-12)


def test_array_arguments_are_checked(cbpp):
    _, design = cbpp
    n = len(PEN)
    with pytest.raises(ArgumentError, match="dtype must be 'float64' or 'float32', got 'float16'"):
        _pen_design(dtype="float16")
    with pytest.raises(ArgumentError, match="groups must be a list"):
        jaxmm.design(np.ones((n, 1)), [np.ones((n, 1))] * 2, np.zeros(n), PEN["plate"].to_numpy())
    with pytest.raises(ArgumentError, match=r"Z\[1\] must be an \(n, k\) matrix"):
        jaxmm.design(np.ones((n, 1)), [np.ones((n, 1)), np.ones((n - 1, 1))], np.zeros(n),
                     [PEN["plate"].to_numpy()] * 2)
    with pytest.raises(jaxmm.errors.DataError, match=r"groups\[1\] has 1 missing value\(s\) \(first rows: \[3\]\)"):
        jaxmm.design(np.ones((n, 1)), [np.ones((n, 1))] * 2, np.zeros(n),
                     [PEN["plate"].to_numpy(), PEN["sample"].where(PEN.index != 3).to_numpy()])
    params = (np.zeros(4), [np.eye(1), np.eye(2)], 1.0)
    with pytest.raises(ArgumentError, match=r"params.chol\[1\] has shape \(2, 2\); term 1 has q = 1"):
        jaxmm.marginal_loglik(params, design, family="binomial")
    with pytest.raises(ArgumentError, match="nAGQ > 1"):
        jaxmm.marginal_loglik(params, design, family="binomial", nAGQ=5)
    weighted = _pen_design(weights=np.ones(n))
    with pytest.raises(ArgumentError, match="prior weights apply only to the gaussian"):
        jaxmm.marginal_loglik((np.zeros(1), [np.eye(1)] * 2, 1.0), weighted, family="poisson")
    assert np.array_equal(jaxmm.row_order([PEN["plate"].to_numpy()] * 2), np.arange(n))
