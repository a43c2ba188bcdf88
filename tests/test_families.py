"""Every family in the registry: log density against scipy.stats, and the hand-written
derivatives against autodiff of the kernel."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxmm._families import FAMILIES, Family, get_family

rng = np.random.default_rng(0)
ETA = jnp.asarray(np.concatenate([rng.normal(0, 2, 20), [-40.0, -5.0, 0.0, 5.0, 40.0]]))
TRIALS = jnp.asarray(rng.integers(1, 12, ETA.size).astype(float))
CASES = {
    "gaussian": (jnp.asarray(rng.normal(0, 3, ETA.size)), jnp.ones(ETA.size), 1.7),
    "binomial": (jnp.floor(TRIALS * 0.4), TRIALS, 1.0),
    "poisson": (jnp.asarray(rng.poisson(3, ETA.size).astype(float)), jnp.ones(ETA.size), 1.0),
    "gamma": (jnp.asarray(rng.gamma(2.0, 1.5, ETA.size)), jnp.ones(ETA.size), 0.7),  # σ = 1/√shape
    "negative_binomial": (jnp.asarray(rng.negative_binomial(2.0, 0.3, ETA.size).astype(float)),
                          jnp.ones(ETA.size), 2.5),  # θ
}


LINKS = [(name, link) for name, (_, links, _) in sorted(FAMILIES.items()) for link in links]
INVERSE_LINK = {"logit": lambda e: 1 / (1 + np.exp(-e)), "probit": stats.norm.cdf,
                "cloglog": lambda e: -np.expm1(-np.exp(e))}


def _scipy_logpdf(name, y, eta, n, disp, link=None):
    y, eta, n = map(np.asarray, (y, eta, n))
    if name == "gaussian":
        return stats.norm.logpdf(y, loc=eta, scale=disp)
    if name == "binomial":
        return stats.binom.logpmf(y, n, INVERSE_LINK[link or "logit"](eta))
    if name == "negative_binomial":
        return stats.nbinom.logpmf(y, disp, disp / (disp + np.exp(eta)))
    if name == "gamma":
        shape = 1.0 / disp**2
        return stats.gamma.logpdf(y, a=shape, scale=np.exp(eta) / shape)
    return stats.poisson.logpmf(y, np.exp(eta))


@pytest.mark.parametrize("name, link", LINKS)
def test_logpdf_matches_scipy(name, link):
    fam = get_family(name, link)
    y, n, disp = CASES[name]
    # scipy loses the tails to rounding (probit and cloglog sooner: Φ(η), 1 − e^(−e^η) → 1)
    # (for cloglog 1 − μ = exp(−e^η) rounds to 0 in scipy's μ-parameterisation from η ≈ 3.6)
    keep = np.abs(np.asarray(ETA)) < {"probit": 6, "cloglog": 3}.get(link, 30)
    ours = np.asarray(fam.logpdf(y, ETA, n, jnp.asarray(disp)))[keep]
    np.testing.assert_allclose(ours, _scipy_logpdf(name, y, ETA, n, disp, link)[keep], rtol=1e-9, atol=1e-9)
    assert np.all(np.isfinite(np.asarray(fam.logpdf(y, ETA, n, jnp.asarray(disp)))))  # and the tails stay finite
    mu = np.asarray(fam.inverse_link(ETA))[keep]
    np.testing.assert_allclose(np.asarray(fam.link_function(jnp.asarray(mu))), np.asarray(ETA)[keep], rtol=1e-8,
                               atol=1e-8)


@pytest.mark.parametrize("name, link", LINKS)
def test_derivatives_match_autodiff(name, link):
    fam = get_family(name, link)
    y, n, disp = CASES[name]
    kernel, s, w = fam.kernel_and_derivatives(y, ETA, n, jnp.asarray(disp))
    generic = Family.kernel_and_derivatives(fam, y, ETA, n, jnp.asarray(disp))
    for ours, ref in zip((kernel, s, w), generic):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(np.asarray(w))) and np.all(np.asarray(w) >= 0)


def test_log1p_unit_is_accurate_to_two_ulps():
    # The vectorised log1p of the logit softplus (XLA:CPU's own is scalar): every point
    # of a dense grid on [0, 1], the region around the √2 − 1 switch, and values down to
    # subnormals, against numpy's log1p.
    from jaxmm._families import log1p_unit

    switch = np.sqrt(2.0) - 1.0
    e = np.concatenate([np.linspace(0.0, 1.0, 1_000_001), np.geomspace(5e-324, 1.0, 20_001),
                        switch + np.linspace(-1e-12, 1e-12, 2001)])
    got, want = np.asarray(log1p_unit(jnp.asarray(e))), np.log1p(e)
    assert np.max(np.abs(got - want)) <= 2.3e-16
    # XLA flushes subnormals to zero (its own log1p too), so relative accuracy is checked
    # on normal numbers
    normal = e >= np.finfo(np.float64).tiny
    assert np.max(np.abs(got - want)[normal] / want[normal]) <= 5e-16
    assert got[0] == 0.0
    got32 = np.asarray(log1p_unit(jnp.asarray(e, jnp.float32)))
    assert got32.dtype == np.float32
    assert np.max(np.abs(got32 - want)) <= 2e-7


def test_softplus_values_and_derivative():
    from jaxmm._families import softplus

    x = np.concatenate([np.linspace(-50.0, 50.0, 100_001), [-800.0, -40.0, 0.0, 40.0, 800.0]])
    got = np.asarray(softplus(jnp.asarray(x)))
    np.testing.assert_allclose(got, np.logaddexp(0.0, x), rtol=5e-16, atol=3e-16)
    assert np.asarray(softplus(jnp.asarray([-np.inf, np.inf]))).tolist() == [0.0, np.inf]
    assert np.isnan(float(softplus(jnp.asarray(np.nan))))
    # first and second derivatives: the logistic function and its derivative
    pts = jnp.asarray([-30.0, -2.0, -0.3, 0.0, 0.7, 3.0, 30.0])
    d1 = jax.vmap(jax.grad(softplus))(pts)
    d2 = jax.vmap(jax.grad(jax.grad(softplus)))(pts)
    sig = 1.0 / (1.0 + np.exp(-np.asarray(pts)))
    np.testing.assert_allclose(np.asarray(d1), sig, rtol=1e-15)
    np.testing.assert_allclose(np.asarray(d2), sig * (1 - sig), rtol=1e-14)
