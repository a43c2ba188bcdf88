"""Adaptive Gauss-Hermite quadrature (nAGQ > 1): the rule against brute-force integration,
the fit against lme4's nAGQ = 25, and the checks that need no reference (k = 1 is Laplace,
gaussian is exact for every k, 7 and 11 nodes agree for q = 2). lme4's numbers come from
tests/r/nagq_refs.R."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import trapezoid
from scipy.stats import binom, norm

import jaxmm
from jaxmm._engine import fit_glmm
from jaxmm._families import get_family
from jaxmm._laplace import laplace_loglik
from jaxmm._quadrature import aghq_loglik, gauss_hermite_rule
from jaxmm._simulate import refit_responses
from jaxmm.errors import ArgumentError

from conftest import central_differences, small_jit

DATA = Path(__file__).parent / "data"
CBPP = "incidence ~ C(period) + (1 | herd)"
SEEDLIKE = "y ~ x + (x | subject)"

# m25 <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), cbpp, binomial, nAGQ = 25)
# logLik(m25) is measured from the saturated model (-41.9783537689, the sum of
# dbinom(incidence, size, incidence / size, log = TRUE)); the integral is their sum.
LME4_NAGQ25 = dict(loglik=-50.0050152701, saturated=-41.9783537689,
                   fixef=(-1.399223727829, -0.991408883813, -1.127809594158, -1.579480950705),
                   se=(0.2335113780, 0.3067682008, 0.3267671626, 0.4275957098), D=0.419282039703)


def _params(res):
    return type(res.params)(*map(jnp.asarray, res.params))


@pytest.fixture(scope="module")
def cbpp():
    data = pd.read_csv(DATA / "cbpp_binomial.csv")
    laplace = jaxmm.fit(CBPP, data, "binomial", trials="size")
    aghq = jaxmm.fit(CBPP, data, "binomial", trials="size", nAGQ=25)
    return data, laplace, aghq


@pytest.fixture(scope="module")
def seedlike():
    data = pd.read_csv(DATA / "seedlike_bernoulli_q2.csv")
    return data, {k: jaxmm.fit(SEEDLIKE, data, "binomial", nAGQ=k) for k in (1, 7, 11)}


def test_rule_weights_and_nodes():
    for k, q in [(1, 1), (5, 1), (4, 2), (3, 3)]:
        z, logw = gauss_hermite_rule(k, q)
        assert z.shape == (k ** q, q)
        # Σ wₘ e^{−‖zₘ‖²} π^{−q/2} = ∫ N(z; 0, I/2) dz = 1 with the adjusted weights
        np.testing.assert_allclose(np.sum(np.exp(logw - np.sum(z * z, axis=1))), 1.0, rtol=1e-13)


# Jitted, with the family and the number of nodes static: run op by op, every operation was
# compiled on its own (test_one_node_is_laplace: 150 compiles, 25 s).
_laplace_at = small_jit(lambda prm, design, u0, fam: laplace_loglik(prm, design, u0, fam)[0], static_argnums=3)
_aghq_at = small_jit(lambda prm, design, u0, fam, k: aghq_loglik(prm, design, u0, fam, k)[0], static_argnums=(3, 4))


def test_one_node_is_laplace(cbpp, seedlike):
    for res in (cbpp[1], seedlike[1][1]):
        fam = get_family(res.family, res.link)
        u0 = jnp.zeros((res.design.n_groups, res.D.shape[0]))
        laplace = float(_laplace_at(_params(res), res.design, u0, fam))
        assert float(_aghq_at(_params(res), res.design, u0, fam, 1)) == pytest.approx(laplace, abs=1e-10)
        assert laplace == pytest.approx(res.loglik, abs=1e-8)


def test_quadrature_equals_brute_force_integration(cbpp):
    """25 nodes against a 20001-point trapezoid rule per herd (q = 1) at the Laplace estimate."""
    _, res, _ = cbpp
    design, prm = res.design, _params(res)
    u0 = jnp.zeros((design.n_groups, 1))
    sd = float(np.sqrt(res.D.iloc[0, 0]))
    eta = np.asarray(design.X @ prm.beta)
    y, n = np.asarray(design.y), np.asarray(design.trials)
    group, weights = np.asarray(design.group), np.asarray(design.weights)
    b = np.linspace(-10 * sd, 10 * sd, 20001)
    total = 0.0
    for i in range(int(design.n_groups)):
        rows = np.flatnonzero((group == i) & (weights > 0))
        if rows.size:
            ll = sum(binom.logpmf(y[r], n[r], 1.0 / (1.0 + np.exp(-(eta[r] + b)))) for r in rows)
            total += np.log(trapezoid(np.exp(ll) * norm.pdf(b, 0.0, sd), b))
    fam = get_family("binomial", None)
    value = float(aghq_loglik(prm, design, u0, fam, 25)[0])
    assert value == pytest.approx(total, abs=1e-9)
    assert abs(value - res.loglik) > 0.01  # and Laplace is measurably off on these data


def test_cbpp_nagq25_matches_lme4(cbpp):
    _, laplace, res = cbpp
    ref = LME4_NAGQ25
    integral = ref["loglik"] + ref["saturated"]
    assert res.converged and res.method == "AGHQ" and res.nAGQ == 25
    assert res.loglik >= integral - 1e-6
    assert res.loglik == pytest.approx(integral, abs=1e-3)
    se = np.sqrt(np.diag(res.vcov_array))
    np.testing.assert_array_less(np.abs(res.fixef.to_numpy() - ref["fixef"]), 0.02 * se)
    np.testing.assert_allclose(se, ref["se"], rtol=1e-3)
    assert res.D.iloc[0, 0] == pytest.approx(ref["D"], rel=1e-3)
    assert "Adaptive Gauss-Hermite Quadrature, nAGQ = 25" in res.summary()
    assert res.loglik != pytest.approx(laplace.loglik, abs=0.01)


def test_q2_seven_and_eleven_nodes_agree_and_differ_from_laplace(seedlike):
    _, fits = seedlike
    assert all(r.converged for r in fits.values())
    assert fits[7].loglik == pytest.approx(fits[11].loglik, abs=1e-3)
    assert abs(fits[7].loglik - fits[1].loglik) > 0.1
    np.testing.assert_allclose(fits[7].fixef.to_numpy(), fits[11].fixef.to_numpy(), atol=1e-3)


def test_gradient_equals_finite_differences(seedlike):
    """Exact gradients for q = 2: the nodes move with the modes and their curvature."""
    _, fits = seedlike
    res = fits[7]
    fam = get_family("binomial", None)
    u0 = jnp.zeros((res.design.n_groups, 2))
    p = len(res.beta)

    def f(v):
        chol = jnp.zeros((2, 2), v.dtype).at[np.tril_indices(2)].set(v[p:])
        return aghq_loglik(type(res.params)(v[:p], chol, jnp.ones(())), res.design, u0, fam, 5)[0]

    x = np.concatenate([res.beta, np.asarray(res.params.chol)[np.tril_indices(2)]])
    x = x + 0.05 * np.cos(np.arange(x.size))  # away from the optimum, where the gradient is not ~0
    g = np.asarray(small_jit(jax.grad(f))(jnp.asarray(x)))
    f = small_jit(f)
    fd = central_differences(lambda v: float(f(jnp.asarray(v))), x, 1e-5)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-4)
    assert np.max(np.abs(g)) > 1.0


@pytest.mark.slow
def test_gaussian_is_exact_for_every_k():
    data = pd.read_csv(DATA / "sleepstudy_ml.csv")
    exact = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, method="ML")
    fam = get_family("gaussian", None)
    u0 = jnp.zeros((exact.design.n_groups, 2))
    for k in (1, 2, 5, 9):
        value = float(_aghq_at(_params(exact), exact.design, u0, fam, k))
        assert value == pytest.approx(exact.loglik, abs=1e-8)
    # the whole quadrature fit (the Laplace engine with a gaussian family) lands on the exact ML fit
    out = fit_glmm(None, exact.design, fam, nagq=5)
    assert float(out["loglik"]) == pytest.approx(exact.loglik, abs=1e-8)
    np.testing.assert_allclose(np.asarray(out["beta"]), exact.beta, rtol=1e-6)
    np.testing.assert_allclose(float(out["dispersion"]), exact.sigma, rtol=1e-6)
    # and fit() accepts nAGQ for gaussian models, which are exact already
    again = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data, method="ML", nAGQ=5)
    assert again.loglik == pytest.approx(exact.loglik, abs=1e-10)


def test_refits_use_the_same_quadrature(cbpp):
    """Bootstrap refits (one vmapped program) of the observed response give the AGHQ fit back."""
    _, _, res = cbpp
    fam = get_family("binomial", None)
    out = refit_responses(res.design, res.design.y[None], fam, False, 1, None, res.nAGQ)
    assert float(out["loglik"][0]) == pytest.approx(res.loglik, abs=1e-7)
    np.testing.assert_allclose(np.asarray(out["beta"][0]), res.beta, rtol=1e-5)


def test_by_matches_separate_fits(cbpp):
    data, _, res = cbpp
    other = data.assign(incidence=np.minimum(data["incidence"] + (data.index % 3 == 0), data["size"]))
    stacked = pd.concat([data.assign(rep="a"), other.assign(rep="b")], ignore_index=True)
    batch = jaxmm.fit(CBPP, stacked, "binomial", trials="size", nAGQ=25, by="rep")
    single_b = jaxmm.fit(CBPP, other, "binomial", trials="size", nAGQ=25)
    np.testing.assert_allclose(batch.fixef.loc["a"].to_numpy(), res.beta, rtol=1e-6)
    np.testing.assert_allclose(batch.fixef.loc["b"].to_numpy(), single_b.beta, rtol=1e-6)
    assert batch.loglik["b"] == pytest.approx(single_b.loglik, abs=1e-8)
    assert batch["a"].method == "AGHQ"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "25"])
def test_bad_nagq_is_refused(cbpp, bad):
    data = cbpp[0]
    with pytest.raises(ArgumentError, match="nAGQ"):
        jaxmm.fit(CBPP, data, "binomial", trials="size", nAGQ=bad)


def test_more_than_three_random_effects_are_refused():
    rng = np.random.default_rng(1)
    n = 400
    data = pd.DataFrame({"g": np.repeat(np.arange(40), 10), "a": rng.normal(size=n), "b": rng.normal(size=n),
                         "c": rng.normal(size=n)})
    data["y"] = rng.integers(0, 2, size=n)
    with pytest.raises(ArgumentError, match=r"nAGQ.*at most 3.*q = 4"):
        jaxmm.fit("y ~ a + (a + b + c | g)", data, "binomial", nAGQ=3)


def test_cli_takes_nagq(tmp_path, capsys, cbpp):
    from jaxmm._cli import main

    data, _, res = cbpp
    path = tmp_path / "cbpp.csv"
    data.to_csv(path, index=False)
    assert main(["fit", str(path), CBPP, "--family", "binomial", "--trials", "size", "--nAGQ", "25",
                 "--json", str(tmp_path / "out.json")]) == 0
    assert "nAGQ = 25" in capsys.readouterr().out
    import json

    out = json.loads((tmp_path / "out.json").read_text())
    assert out["nAGQ"] == 25 and out["method"] == "AGHQ"
    assert out["loglik"] == pytest.approx(res.loglik, abs=1e-9)


# confint(m25, method = "profile", oldNames = FALSE)
LME4_NAGQ25_PROFILE = {
    "(Intercept)": (-1.9046840551, -0.9462133523), "period2": (-1.6160836604, -0.4066108208),
    "period3": (-1.8004081737, -0.5104498570), "period4": (-2.5001919179, -0.7995920246),
    "sd_(Intercept)": (0.3488017427, 1.1112974661),
}


def test_profile_intervals_use_the_quadrature(cbpp):
    """Within 0.1 % of the width: the Laplace profile misses by up to 1.5 % here (the SD's
    upper end 1.0999 against 1.1113), so the bar tells the two apart."""
    _, _, res = cbpp
    ci = res.confint("profile")
    for name, (lo, hi) in LME4_NAGQ25_PROFILE.items():
        width = hi - lo
        assert abs(ci.loc[name, "lower"] - lo) < 1e-3 * width, name
        assert abs(ci.loc[name, "upper"] - hi) < 1e-3 * width, name


def test_method_names(cbpp):
    data, _, res = cbpp
    named = jaxmm.fit(CBPP, data, "binomial", trials="size", method="aghq", nAGQ=25)
    assert named.method == "AGHQ" and named.loglik == pytest.approx(res.loglik, abs=1e-10)
    with pytest.raises(ArgumentError, match="nAGQ=k"):
        jaxmm.fit(CBPP, data, "binomial", trials="size", method="AGHQ")


def _correlated_bernoulli(q, m=6, rows=20, seed=3):
    """Bernoulli rows of m groups with q correlated random effects (L far from diagonal)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), rows)
    x1, x2 = rng.normal(size=g.size), rng.normal(size=g.size)
    X = np.column_stack([np.ones(g.size), x1])
    Z = np.column_stack([np.ones(g.size), x1 + 0.8, x2 - 0.5])[:, :q]
    L = np.array([[1.2, 0.0, 0.0], [0.9, 0.6, 0.0], [-0.5, 0.4, 0.7]])[:q, :q]
    beta = np.array([0.2, -0.4])
    eta = X @ beta + np.sum(Z * (rng.normal(size=(m, q)) @ L.T)[g], axis=1)
    y = (rng.random(g.size) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    return X, Z, y, g, beta, L


def _grid_loglik(X, Z, y, g, beta, L, step):
    """Σᵢ log ∫ p(yᵢ | b = L u) φ(u) du by the trapezoid rule on a grid over [−6, 6]^q (spacing
    `step`, well below the posterior SDs of u, so the rule is exact to many digits)."""
    q = Z.shape[1]
    axis = np.arange(-6.0, 6.0 + step / 2, step)
    U = np.stack(np.meshgrid(*([axis] * q), indexing="ij"), -1).reshape(-1, q)
    log_prior = -0.5 * np.sum(U * U, axis=1) - 0.5 * q * np.log(2 * np.pi)
    total = 0.0
    for i in np.unique(g):
        rows = g == i
        eta = (X[rows] @ beta)[None, :] + (U @ L.T) @ Z[rows].T
        ll = np.sum(y[rows] * -np.logaddexp(0.0, -eta) + (1 - y[rows]) * -np.logaddexp(0.0, eta), axis=1) + log_prior
        top = ll.max()
        total += top + np.log(np.sum(np.exp(ll - top)) * step ** q)
    return total


@pytest.mark.parametrize("q, k, tol, step", [(2, 7, 1e-3, 0.1), (3, 5, 1.5e-2, 0.2)])
def test_correlated_effects_integrate_to_the_grid_value(q, k, tol, step):
    """q = 2 and 3 with correlated effects, against a grid integral: the error falls with k and
    at k nodes is within `tol` (measured: 3.3e-4 and 5.7e-3). Scaled by L̃ᵀ instead of L̃ (a
    valid but worse rule), the same nodes were 0.095 and 0.52 off."""
    from jaxmm._place_rows import make_design
    from jaxmm._params import Params

    X, Z, y, g, beta, L = _correlated_bernoulli(q)
    truth = _grid_loglik(X, Z, y, g, beta, L, step)
    design, _, _ = make_design(X, Z, y, g, tile=1)
    params = Params(jnp.asarray(beta), jnp.asarray(L), jnp.ones(()))
    u0 = jnp.zeros((design.n_groups, q))
    fam = get_family("binomial", None)
    value = small_jit(lambda prm, k: aghq_loglik(prm, design, u0, fam, k)[0], static_argnums=1)
    errors = [abs(float(value(params, nodes)) - truth) for nodes in (3, k)]
    assert errors[1] < errors[0] / 5
    assert errors[1] <= tol, errors
