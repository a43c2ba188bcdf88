"""The exact LMM with several random-effect terms (_crossed_lmm): the blocked factorisation
against the dense formulas, and its gradient against differences. The fits through
``jaxmm.fit`` are checked against lme4 in test_crossed_fit.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special

from jaxmm._crossed_effects import solution
from jaxmm._crossed_lmm import Terms, crossed_stats, profiled_loglik

from conftest import central_differences, small_jit

# one program each, not the factorisation's operations one by one
_loglik = small_jit(profiled_loglik, static_argnames=("terms", "reml"))
_solution = small_jit(solution, static_argnames=("terms", "reml", "shared"))


def _three_terms():
    """(x | g1) + (1 | g2) + (x | g3), unbalanced, with prior weights: every shape the
    blocks take (q₁ = 2 first, a scalar and a 2×2 term in the rest)."""
    rng = np.random.default_rng(0)
    n = 300
    g = [rng.integers(0, 40, n), rng.integers(0, 7, n), rng.integers(0, 5, n)]
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    Zs = [X, np.ones((n, 1)), X]
    y = X @ [1.0, 0.5] + rng.normal(size=n) + rng.normal(size=40)[g[0]] + rng.normal(size=7)[g[1]]
    w = rng.uniform(0.5, 2.0, n)
    terms = Terms(q=(2, 1, 2), m=(40, 7, 5))
    lams = (jnp.array([[0.8, 0.0], [0.3, 0.5]]), jnp.array([[1.3]]), jnp.array([[0.6, 0.0], [-0.2, 0.4]]))
    return y, X, Zs, g, w, terms, lams


def _dense(y, X, Zs, g, w, terms, lams):
    """Z Λ, R = W⁻¹ + ZΛΛᵀZᵀ and A = I + ΛᵀZᵀWZΛ, written out."""
    n = y.size
    Zfull, Ls = [], []
    for Z, codes, lam, m in zip(Zs, g, lams, terms.m):
        q = Z.shape[1]
        Zk = np.zeros((n, m * q))
        for e in range(q):
            Zk[np.arange(n), codes * q + e] = Z[:, e]
        Zfull.append(Zk)
        Ls.append(np.kron(np.eye(m), np.asarray(lam)))
    Z, L = np.hstack(Zfull), scipy.linalg.block_diag(*Ls)
    R = np.diag(1.0 / w) + Z @ L @ L.T @ Z.T
    A = np.eye(L.shape[0]) + L.T @ Z.T @ np.diag(w) @ Z @ L
    return Z, L, R, A


@pytest.fixture(scope="module")
def three_terms():
    y, X, Zs, g, w, terms, lams = _three_terms()
    return (y, X, Zs, g, w, terms, lams), crossed_stats(y, X, Zs, g, terms, weights=w)


@pytest.mark.parametrize("reml", [False, True])
def test_blocked_loglik_equals_the_dense_formula(three_terms, reml):
    (y, X, Zs, g, w, terms, lams), stats = three_terms
    _, _, R, _ = _dense(y, X, Zs, g, w, terms, lams)
    n, p = X.shape
    Ri = np.linalg.inv(R)
    XtRX = X.T @ Ri @ X
    beta = np.linalg.solve(XtRX, X.T @ Ri @ y)
    e = y - X @ beta
    dof = n - p if reml else n
    value = np.linalg.slogdet(R)[1] + dof * (1 + np.log(2 * np.pi * (e @ Ri @ e) / dof))
    if reml:
        value += np.linalg.slogdet(XtRX)[1]
    assert float(_loglik(lams, stats, terms, reml)) == pytest.approx(-0.5 * value, abs=1e-9)


def test_blups_and_conditional_covariances_equal_the_dense_formula(three_terms):
    (y, X, Zs, g, w, terms, lams), stats = three_terms
    Z, L, R, A = _dense(y, X, Zs, g, w, terms, lams)
    sol = _solution(lams, stats, terms, True)
    b = L @ L.T @ Z.T @ np.linalg.solve(R, y - X @ np.asarray(sol.beta))
    cov = float(sol.sigma) ** 2 * L @ np.linalg.inv(A) @ L.T
    at = 0
    for k, (q, m) in enumerate(zip(terms.q, terms.m)):
        np.testing.assert_allclose(sol.ranefs[k], b[at:at + q * m].reshape(m, q), rtol=0, atol=1e-12)
        blocks = np.stack([cov[at + i * q:at + (i + 1) * q, at + i * q:at + (i + 1) * q] for i in range(m)])
        # the off-diagonal entries too: a q×q block, not its diagonal alone
        np.testing.assert_allclose(sol.cond_vars[k], blocks, rtol=0, atol=1e-13)
        at += q * m


def test_gradient_equals_finite_differences(three_terms):
    (_, _, _, _, _, terms, lams), stats = three_terms
    shapes = [(np.tril_indices(lam.shape[0])) for lam in lams]
    flat = np.concatenate([np.asarray(lam)[r, c] for lam, (r, c) in zip(lams, shapes)])

    def f(v):
        out, at = [], 0
        for lam, (r, c) in zip(lams, shapes):
            out.append(jnp.zeros(lam.shape, v.dtype).at[r, c].set(v[at:at + r.size]))
            at += r.size
        return profiled_loglik(tuple(out), stats, terms, True)

    grad = np.asarray(small_jit(jax.grad(f))(jnp.asarray(flat)))
    value = small_jit(f)
    fd = central_differences(lambda v: float(value(jnp.asarray(v))), flat, np.full(flat.size, 1e-5))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)


def test_terms_on_one_factor_get_their_cross_covariances():
    # (1 | g1) + (0 + x | g1) + (1 | g2) + (0 + x | g2): the conditional covariance of a
    # level's intercept and slope is not zero although the terms are independent a priori,
    # both where the first term is one of the pair and where neither is.
    rng = np.random.default_rng(3)
    n = 250
    g1, g2 = rng.integers(0, 30, n), rng.integers(0, 6, n)
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    y = X @ [0.5, 1.0] + rng.normal(size=30)[g1] + x * rng.normal(size=30)[g1] + rng.normal(size=n)
    Zs, g = [X[:, :1], X[:, 1:], X[:, :1], X[:, 1:]], [g1, g1, g2, g2]
    w = np.ones(n)
    terms = Terms(q=(1, 1, 1, 1), m=(30, 30, 6, 6))
    lams = tuple(jnp.array([[v]]) for v in (0.9, 0.6, 1.1, 0.4))
    stats = crossed_stats(y, X, Zs, g, terms)
    sol = _solution(lams, stats, terms, True, shared=((0, 1), (2, 3)))
    _, L, _, A = _dense(y, X, Zs, g, w, terms, lams)
    cov = float(sol.sigma) ** 2 * L @ np.linalg.inv(A) @ L.T
    for (a, b), got in zip(((0, 1), (2, 3)), sol.cross_vars):
        start = np.cumsum((0,) + terms.m)
        want = np.array([cov[start[a] + i, start[b] + i] for i in range(terms.m[a])])
        assert np.abs(want).max() > 1e-3  # not zero: the test would not see a zeroed block
        np.testing.assert_allclose(np.asarray(got)[:, 0, 0], want, rtol=0, atol=1e-13)


def test_blocked_solve_equals_the_dense_solve(three_terms):
    from jaxmm._crossed_lmm import factor, solve

    (y, X, Zs, g, w, terms, lams), stats = three_terms
    _, _, _, A = _dense(y, X, Zs, g, w, terms, lams)
    rng = np.random.default_rng(5)
    g1, g2 = rng.normal(size=(terms.m[0], terms.q[0])), rng.normal(size=terms.rest)
    x1, x2 = small_jit(lambda a, b: solve(factor(lams, stats, terms), stats, a, b))(jnp.asarray(g1), jnp.asarray(g2))
    want = np.linalg.solve(A, np.concatenate([g1.ravel(), g2]))
    np.testing.assert_allclose(np.concatenate([np.ravel(x1), x2]), want, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def poisson_crossed():
    """A Poisson GLMM with (1 | g1) + (x | g2): its rows, and the dense Laplace pieces."""
    from jaxmm._crossed_laplace import crossed_rows

    rng = np.random.default_rng(11)
    n = 160
    g = [rng.integers(0, 20, n), rng.integers(0, 5, n)]
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    y = rng.poisson(np.exp(0.2 + 0.3 * x + 0.5 * rng.normal(size=20)[g[0]] + 0.4 * rng.normal(size=5)[g[1]]))
    Zs, terms = [np.ones((n, 1)), X], Terms(q=(1, 2), m=(20, 5))
    return y, X, Zs, g, terms, crossed_rows(y.astype(float), X, Zs, g, terms)


def _dense_laplace(beta, lams, y, X, Zs, g, terms):
    n = y.size
    Z, L, _, _ = _dense(y.astype(float), X, Zs, g, np.ones(n), terms, lams)
    ZL = Z @ L
    u = np.zeros(ZL.shape[1])
    for _ in range(50):  # Newton on Σ log p − ½‖u‖²
        mu = np.exp(X @ beta + ZL @ u)
        H = np.eye(u.size) + ZL.T @ (mu[:, None] * ZL)
        u = u + np.linalg.solve(H, ZL.T @ (y - mu) - u)
    eta = X @ beta + ZL @ u
    mu = np.exp(eta)
    H = np.eye(u.size) + ZL.T @ (mu[:, None] * ZL)
    logp = np.sum(y * eta - mu - scipy.special.gammaln(y + 1.0))
    return logp - 0.5 * u @ u - 0.5 * np.linalg.slogdet(H)[1]


def test_laplace_loglik_equals_the_dense_laplace(poisson_crossed):
    from jaxmm._crossed_laplace import laplace_loglik
    from jaxmm._families import get_family

    y, X, Zs, g, terms, rows = poisson_crossed
    beta = np.array([0.1, 0.25])
    lams = (jnp.array([[0.6]]), jnp.array([[0.5, 0.0], [0.2, 0.3]]))
    fam = get_family("poisson")
    u1, u2 = jnp.zeros((20, 1)), jnp.zeros(terms.rest)
    value, _ = small_jit(lambda b, ls: laplace_loglik(b, ls, jnp.ones(()), rows, terms, fam, u1, u2))(
        jnp.asarray(beta), lams)
    assert float(value) == pytest.approx(_dense_laplace(beta, lams, y, X, Zs, g, terms), abs=1e-9)


def test_laplace_gradient_equals_finite_differences(poisson_crossed):
    from jaxmm._crossed_laplace import laplace_loglik
    from jaxmm._families import get_family

    _, _, _, _, terms, rows = poisson_crossed
    fam = get_family("poisson")
    u1, u2 = jnp.zeros((20, 1)), jnp.zeros(terms.rest)

    def f(v):  # β, then Λ₁ and Λ₂'s free entries
        lams = (v[2:3].reshape(1, 1), jnp.zeros((2, 2), v.dtype).at[np.tril_indices(2)].set(v[3:6]))
        return laplace_loglik(v[:2], lams, jnp.ones((), v.dtype), rows, terms, fam, u1, u2)[0]

    v = np.array([0.1, 0.25, 0.6, 0.5, 0.2, 0.3])
    grad = np.asarray(small_jit(jax.grad(f))(jnp.asarray(v)))
    value = small_jit(f)
    fd = central_differences(lambda t: float(value(jnp.asarray(t))), v, np.full(v.size, 1e-5))
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("design", ["three_levels", "terms_on_shared_factors"])
def test_nested_designs_keep_the_remainder_block_sparse(design):
    # (1 | district/school/class) with (x | school), or (1 | g) + (0 + x | g) + (1 | h) + (0 + x | h)
    # with g inside h: the chain's block-sparse remainder gives the dense one's log-likelihoods
    # (exact and Laplace), BLUPs, conditional covariances and cross blocks
    from jaxmm._crossed_laplace import crossed_rows, laplace_loglik
    from jaxmm._families import get_family

    rng = np.random.default_rng(8)
    n = 200
    x = rng.normal(size=n)
    X = np.column_stack([np.ones(n), x])
    one, slope = np.ones((n, 1)), X[:, 1:]
    if design == "three_levels":
        klass = rng.permutation(np.arange(n) % 60)  # 5 classes in each of 12 schools, 4 in each of 3 districts
        codes, m = [klass, klass // 5, klass // 20], (60, 12, 3)
        Zs, shared = [one, X, one], ()
        lams = (jnp.array([[0.7]]), jnp.array([[0.6, 0.0], [0.2, 0.4]]), jnp.array([[0.9]]))
    else:
        g = rng.permutation(np.arange(n) % 12)
        codes, m = [g, g, g // 3, g // 3], (12, 12, 4, 4)
        Zs, shared = [one, slope, one, slope], ((0, 1), (2, 3))
        lams = tuple(jnp.array([[v]]) for v in (0.7, 0.5, 0.8, 0.3))
    q = tuple(Z.shape[1] for Z in Zs)
    y = X @ [0.3, 0.5] + rng.normal(size=m[0])[codes[0]] + rng.normal(size=m[-1])[codes[-1]] + rng.normal(size=n)
    counts = rng.poisson(np.exp(0.1 + 0.2 * x), n).astype(float)
    out = {}
    for nested in (False, True):
        terms = Terms(q=q, m=m, nested=nested)
        stats = crossed_stats(y, X, Zs, codes, terms)
        sol = _solution(lams, stats, terms, True, shared=shared)
        rows = crossed_rows(counts, X, Zs, codes, terms)
        u1, u2 = jnp.zeros((m[0], q[0])), jnp.zeros(terms.rest)
        laplace = small_jit(lambda b, ls: laplace_loglik(b, ls, jnp.ones(()), rows, terms, get_family("poisson"),
                                                          u1, u2)[0])(jnp.array([0.1, 0.2]), lams)
        value, grad = small_jit(jax.value_and_grad(profiled_loglik), static_argnames=("terms", "reml"))(
            lams, stats, terms, True)
        out[nested] = (float(value), float(laplace), sol, grad)
    dense, blocked = out[False], out[True]
    assert blocked[0] == pytest.approx(dense[0], abs=1e-10)
    for a, b in zip(blocked[3], dense[3]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    assert blocked[1] == pytest.approx(dense[1], abs=1e-9)
    for name in ("ranefs", "cond_vars", "cross_vars"):
        for a, b in zip(getattr(blocked[2], name), getattr(dense[2], name)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_plan_terms_keeps_nested_chains_sparse_and_refuses_a_large_dense_remainder():
    # 30,000 classes in 10,000 schools in 2,500 districts: 12,500 effects after the first term,
    # a chain whatever the given order; the same sizes crossed (a factor not holding the
    # other's levels) over 20,000 dense effects are refused, naming the terms and the memory
    from jaxmm._crossed_lmm import plan_terms
    from jaxmm.errors import DataError

    klass = np.arange(60_000) % 30_000
    order, terms = plan_terms([1, 1, 1], [2_500, 30_000, 10_000], [klass // 12, klass, klass // 3], ["d", "c", "s"])
    assert order == (1, 2, 0) and terms.nested and terms.m == (30_000, 10_000, 2_500)
    moved = np.concatenate([np.arange(30_000), np.arange(30_000) + 1]) % 10_000  # a class's two rows differ
    assert not plan_terms([1, 1], [30_000, 10_000], [klass, moved], ["a", "b"])[1].nested
    crossed = np.arange(60_000) % 21_000
    with pytest.raises(DataError, match=r"\(b\) have 21,000 effects.*3\.3 GiB"):
        plan_terms([1, 1], [30_000, 21_000], [klass, crossed], ["a", "b"])
