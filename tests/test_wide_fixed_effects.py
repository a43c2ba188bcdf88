"""Many fixed-effect columns: the fit's programs do not grow with p, and the Hessian's
difference gradients evaluated in batches give the fit of one at a time."""
import numpy as np
import pandas as pd
import pytest

import jaxmm


@pytest.fixture(scope="module")
def wide_table():
    """A factor of 150 levels (p = 150): products over its columns are dots, the verdict's
    factorisations branch, and the Hessian's differences are evaluated in batches."""
    rng = np.random.default_rng(7)
    n, levels = 1500, 150
    f = np.r_[np.arange(levels), rng.integers(0, levels, n - levels)]
    g = rng.integers(0, 30, n)
    eta = 0.3 + rng.normal(0, 0.3, levels)[f] + rng.normal(0, 0.5, 30)[g]
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "f": f, "g": g})


def test_wide_fixed_effects_fit_the_same_with_batched_differences(wide_table, monkeypatch):
    from jaxmm import _engine

    batched = jaxmm.fit("y ~ C(f) + (1 | g)", wide_table, family="poisson")
    monkeypatch.setattr(_engine, "FD_BATCH_ROWS", 0)  # one difference gradient at a time
    single = jaxmm.fit("y ~ C(f) + (1 | g)", wide_table, family="poisson")
    assert batched.converged and len(batched.fixef) == 150
    assert batched.n_eval == single.n_eval
    np.testing.assert_allclose(batched.loglik, single.loglik, rtol=1e-12)
    np.testing.assert_allclose(batched.fixef, single.fixef, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(batched.vcov.to_numpy(), single.vcov.to_numpy(), rtol=1e-6, atol=1e-12)
