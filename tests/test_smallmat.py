"""The unrolled small-matrix routines against numpy/LAPACK."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmm import _smallmat as sm
from conftest import small_jit


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


def test_products_against_numpy():
    # sm.matmul / sm.matvec replace dots in the fit (rows by columns, groups by q x q), with
    # numpy's broadcasting of leading axes.
    rng = np.random.default_rng(0)
    rows, per_group, shared, vec = (rng.standard_normal(s) for s in ((50, 3), (7, 2, 2), (2, 2), (3,)))
    np.testing.assert_allclose(np.asarray(sm.matvec(jnp.asarray(rows), jnp.asarray(vec))), rows @ vec, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(sm.matmul(jnp.asarray(rows[:, :2]), jnp.asarray(shared))),
                               rows[:, :2] @ shared, rtol=1e-12)
    for a, b in ((per_group, shared), (shared, per_group), (per_group, per_group)):
        np.testing.assert_allclose(np.asarray(sm.matmul(jnp.asarray(a), jnp.asarray(b))), a @ b, rtol=1e-12)
    v = rng.standard_normal((7, 2))
    np.testing.assert_allclose(np.asarray(sm.matvec(jnp.asarray(per_group), jnp.asarray(v))),
                               np.einsum("mab,mb->ma", per_group, v), rtol=1e-12)
    with pytest.raises(ValueError, match="matmul"):
        sm.matmul(jnp.asarray(rows), jnp.asarray(shared))


def test_gram_of_many_columns_is_the_symmetric_product():
    """From GRAM_BLOCKED_MIN columns on, Aᵀ diag(w) A is built from the blocks on and above
    the diagonal (uneven blocks: p = 601 is not a multiple of 4) and mirrored."""
    rng = np.random.default_rng(3)
    A, w = rng.normal(size=(40, 601)), rng.uniform(-1.0, 2.0, 40)
    assert A.shape[1] >= sm.GRAM_BLOCKED_MIN
    G = np.asarray(small_jit(sm.gram)(jnp.asarray(A), jnp.asarray(w)))
    np.testing.assert_allclose(G, A.T @ (A * w[:, None]), rtol=1e-12, atol=1e-12)
    assert np.array_equal(G, G.T)


@pytest.mark.parametrize("k", [0, 3])
def test_dense_logdet_and_forms_and_their_written_derivative(k):
    """_spd.logdet_and_forms equals numpy's log|S| and TᵀS⁻¹T, and its written VJP equals
    JAX's derivative of the same functions through a Cholesky factor, for S read as its
    symmetric part (an asymmetric input, an asymmetric weighting of the forms)."""
    from jaxmm._spd import logdet_and_forms

    rng = np.random.default_rng(k)
    B = rng.standard_normal((9, 9))
    S = B @ B.T + 9 * np.eye(9) + 0.1 * rng.standard_normal((9, 9))  # read as its symmetric part
    T = rng.standard_normal((9, k))
    W = rng.standard_normal((k, k))
    sym = 0.5 * (S + S.T)
    ld, Q = logdet_and_forms(jnp.asarray(S), jnp.asarray(T))
    np.testing.assert_allclose(float(ld), np.linalg.slogdet(sym)[1], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(Q), T.T @ np.linalg.solve(sym, T), rtol=1e-10, atol=1e-12)

    def plain(S, T):
        C = jnp.linalg.cholesky(S)
        Y = jax.scipy.linalg.cho_solve((C, True), T)
        return 2.0 * jnp.sum(jnp.log(jnp.diagonal(C))), T.T @ Y

    loss = lambda f: lambda S, T: (lambda out: 0.7 * out[0] + jnp.sum(jnp.asarray(W) * out[1]))(f(S, T))
    got = small_jit(jax.grad(loss(logdet_and_forms), argnums=(0, 1)))(jnp.asarray(S), jnp.asarray(T))
    want = small_jit(jax.grad(loss(plain), argnums=(0, 1)))(jnp.asarray(S), jnp.asarray(T))
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
