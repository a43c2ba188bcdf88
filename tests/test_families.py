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
}


def _scipy_logpdf(name, y, eta, n, disp):
    y, eta, n = map(np.asarray, (y, eta, n))
    if name == "gaussian":
        return stats.norm.logpdf(y, loc=eta, scale=disp)
    if name == "binomial":
        return stats.binom.logpmf(y, n, 1 / (1 + np.exp(-eta)))
    if name == "gamma":
        shape = 1.0 / disp**2
        return stats.gamma.logpdf(y, a=shape, scale=np.exp(eta) / shape)
    return stats.poisson.logpmf(y, np.exp(eta))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_logpdf_matches_scipy(name):
    fam = get_family(name)
    y, n, disp = CASES[name]
    keep = np.abs(np.asarray(ETA)) < 30  # scipy loses the tails to rounding
    ours = np.asarray(fam.logpdf(y, ETA, n, jnp.asarray(disp)))[keep]
    np.testing.assert_allclose(ours, _scipy_logpdf(name, y, ETA, n, disp)[keep], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_derivatives_match_autodiff(name):
    fam = get_family(name)
    y, n, disp = CASES[name]
    kernel, s, w = fam.kernel_and_derivatives(y, ETA, n, jnp.asarray(disp))
    generic = Family.kernel_and_derivatives(fam, y, ETA, n, jnp.asarray(disp))
    for ours, ref in zip((kernel, s, w), generic):
        np.testing.assert_allclose(np.asarray(ours), np.asarray(ref), rtol=1e-12, atol=1e-300)
    assert np.all(np.isfinite(np.asarray(w))) and np.all(np.asarray(w) >= 0)
