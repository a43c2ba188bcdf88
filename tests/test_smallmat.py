"""The unrolled small-matrix routines against numpy/LAPACK."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import _smallmat as sm


@pytest.mark.parametrize("q", [1, 2, 3, 5])
def test_against_numpy(q):
    rng = np.random.default_rng(q)
    B = rng.standard_normal((7, q, q))
    A = B @ np.swapaxes(B, -1, -2) + 0.5 * np.eye(q)
    v = rng.standard_normal((7, q))
    W = rng.standard_normal((7, q, 4))
    L = np.asarray(sm.cholesky(jnp.asarray(A)))
    np.testing.assert_allclose(L, np.linalg.cholesky(A), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sm.cho_solve(L, v)), np.linalg.solve(A, v[..., None])[..., 0], rtol=1e-10)
    np.testing.assert_allclose(np.asarray(sm.cho_solve(L, W)), np.linalg.solve(A, W), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sm.solve_lower(L, W)), np.linalg.solve(L, W), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sm.cho_inverse(L)), np.linalg.inv(A), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.asarray(sm.logdet_from_cholesky(L)), np.linalg.slogdet(A)[1], rtol=1e-12)
