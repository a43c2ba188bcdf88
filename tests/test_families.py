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
