"""Many fixed-effect columns: the fit's programs do not grow with p, and the Hessian's exact
fixed-effect block (with difference gradients for the covariance parameters) gives the fit
and the covariance of a Hessian made of differences alone."""
import numpy as np
import pandas as pd
import pytest

import jaxmm


@pytest.fixture(scope="module")
def wide_table():
    """A factor of 150 levels (p = 150): products over its columns are dots, the verdict's
    factorisations branch, and the Hessian's fixed-effect block is exact."""
    rng = np.random.default_rng(7)
    n, levels = 1500, 150
    f = np.r_[np.arange(levels), rng.integers(0, levels, n - levels)]
    g = rng.integers(0, 30, n)
    x = rng.normal(size=n)
    eta = 0.3 + rng.normal(0, 0.3, levels)[f] + rng.normal(0, 0.5, 30)[g] + rng.normal(0, 0.3, 30)[g] * x
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "f": f, "g": g, "x": x})


def test_wide_fixed_effects_exact_block_equals_differences(wide_table, monkeypatch):
    from jaxmm import _engine

    formula = "y ~ C(f) + (x | g)"
    exact = jaxmm.fit(formula, wide_table, family="poisson")
    # differences along every coordinate
    monkeypatch.setattr(_engine, "EXACT_BETA_MIN_COLUMNS", 10 ** 9)
    differences = jaxmm.fit(formula, wide_table, family="poisson")
    assert exact.converged and differences.converged and len(exact.fixef) == 150
    # the same optimiser path; the Hessian costs 3 gradients (the entries of L) instead of 153
    assert differences.n_eval - exact.n_eval == 150
    np.testing.assert_allclose(exact.loglik, differences.loglik, rtol=1e-12)
    np.testing.assert_allclose(exact.fixef, differences.fixef, rtol=1e-8, atol=1e-10)
    # forward differences with steps of 1e-6 relative: 4e-6 apart at most
    np.testing.assert_allclose(exact.vcov.to_numpy(), differences.vcov.to_numpy(), rtol=4e-5, atol=1e-12)
    np.testing.assert_allclose(exact.D, differences.D, rtol=1e-8)
