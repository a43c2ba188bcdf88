"""The exact linear mixed model: closed-form profiled ML and REML.

Write D = σ² Λ Λᵀ and V_i = σ² (I + Z_i Λ Λᵀ Z_iᵀ) = σ² R_i. With M_i = I + Λᵀ Z_iᵀ Z_i Λ,
Woodbury and the determinant lemma give every term from per-group q×q and q×p pieces:

    log|R| = Σ log|M_i|,   XᵀR⁻¹X = XᵀX − Σ (ΛᵀZ_iᵀX_i)ᵀ M_i⁻¹ (ΛᵀZ_iᵀX_i),  likewise XᵀR⁻¹y, yᵀR⁻¹y.

β̂ (GLS) and σ̂² are profiled out, leaving a function of Λ alone:

    ML:    ℓ   = −½ [ log|R| + n (1 + log(2π·pwrss/n)) ]
    REML:  ℓ_R = −½ [ log|R| + log|XᵀR⁻¹X| + (n−p)(1 + log(2π·pwrss/(n−p))) ]

The per-group sufficient statistics are computed once per dataset, so each
evaluation costs O(m·q²·(p+q)), independent of the number of rows.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from . import _smallmat as sm
from ._types import Design
from ._jit import Kernels
from ._params import Params

_LOG_2PI = 1.8378770664093453


class LMMStats(NamedTuple):
    ZtZ: jnp.ndarray  # (m, q, q)
    ZtX: jnp.ndarray  # (m, q, p)
    Zty: jnp.ndarray  # (m, q)
    XtX: jnp.ndarray  # (p, p)
    Xty: jnp.ndarray  # (p,)
    yty: jnp.ndarray  # ()
    n: jnp.ndarray    # () number of rows with positive weight
    half_log_w: jnp.ndarray  # () ½ Σ log w over those rows: the prior weights' Jacobian term


def lmm_stats(design: Design, dtype=None, kernels: Kernels = Kernels()) -> LMMStats:
    """Per-group sufficient statistics, accumulated in ``dtype`` (default: the design's);
    ``kernels.products_as_sums`` writes XᵀX and Xᵀy as sums (``_jit.Kernels``).

    A float32 design is upcast row by row inside the fused sums, so the statistics keep
    float64 digits while the stored rows take half the memory.
    """
    dtype = design.X.dtype if dtype is None else dtype
    def seg(v):
        return jax.ops.segment_sum(v, design.group, num_segments=design.n_groups, indices_are_sorted=True)

    # Prior weights (row variance σ²/w) enter as √w-scaled rows; weight 0 removes a row.
    w = design.weights.astype(dtype)
    sw = jnp.sqrt(w)
    X, Z = design.X.astype(dtype) * sw[:, None], design.Z.astype(dtype) * sw[:, None]
    y = (design.y.astype(dtype) - design.offset.astype(dtype)) * sw
    # Per column of Z, so the temporaries are (N, q) and (N, p), never (N, q, p).
    q = Z.shape[1]
    return LMMStats(
        ZtZ=jnp.stack([seg(Z[:, k:k + 1] * Z) for k in range(q)], axis=1),
        ZtX=jnp.stack([seg(Z[:, k:k + 1] * X) for k in range(q)], axis=1),
        Zty=seg(Z * y[:, None]),
        XtX=sm.cross(X, X, kernels.products_as_sums),
        Xty=sm.cross(X, y, kernels.products_as_sums),
        yty=jnp.sum(y * y),
        n=jnp.sum(w > 0).astype(dtype),
        half_log_w=0.5 * jnp.sum(jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), 0.0)),
    )


class _Reduced(NamedTuple):
    XtRX: jnp.ndarray
    XtRy: jnp.ndarray
    ytRy: jnp.ndarray
    logdet_R: jnp.ndarray
    chol_M: jnp.ndarray  # (m, q, q)
    Q: jnp.ndarray       # (m, q, p)  C⁻¹ ΛᵀZᵀX
    r: jnp.ndarray       # (m, q)     C⁻¹ ΛᵀZᵀy


def _matmul(A, B, as_sums: bool):
    """A @ B for the per-group q×q and q×p products (leading axes of equal rank): written out
    on accelerators, where each dot is a cuBLAS call (``_jit.Kernels.products_as_sums``)."""
    return sm.matmul(A, B) if as_sums else A @ B


def _row_times(v, B, as_sums: bool):
    """v @ B for each row of v (m, k) and one B (k, n)."""
    return sm.matmul(v[:, None, :], B[None])[:, 0, :] if as_sums else v @ B


def _reduce(lam, stats: LMMStats, kernels: Kernels) -> _Reduced:
    q = lam.shape[0]
    sums = kernels.products_as_sums
    M = jnp.eye(q, dtype=lam.dtype)[None] + _matmul(_matmul(lam.T[None], stats.ZtZ, sums), lam[None], sums)
    C = sm.cholesky(M)
    P = _matmul(lam.T[None], stats.ZtX, sums)
    c = _row_times(stats.Zty, lam, sums)
    Q = sm.solve_lower(C, P)
    r = sm.solve_lower(C, c)
    return _Reduced(
        XtRX=stats.XtX - sm.cross(Q, Q, sums),
        XtRy=stats.Xty - sm.cross(Q, r, sums),
        ytRy=stats.yty - jnp.sum(r * r),
        logdet_R=jnp.sum(sm.logdet_from_cholesky(C)),
        chol_M=C, Q=Q, r=r,
    )


def _gls(red: _Reduced):
    """β̂, the penalised residual sum of squares, log|XᵀR⁻¹X| and the Cholesky factor of XᵀR⁻¹X."""
    chol_X = jnp.linalg.cholesky(red.XtRX)
    beta = cho_solve((chol_X, True), red.XtRy)
    pwrss = red.ytRy - jnp.sum(beta * red.XtRy)
    logdet_X = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_X)))
    return beta, pwrss, logdet_X, chol_X


def _dof(stats: LMMStats, p: int, reml: bool):
    return stats.n - p if reml else stats.n


def profiled_loglik(lam, stats: LMMStats, reml: bool, kernels: Kernels = Kernels()):
    """Log-likelihood (REML or ML) maximised over β and σ for the relative factor Λ."""
    red = _reduce(lam, stats, kernels)
    beta, pwrss, logdet_X, _ = _gls(red)
    dof = _dof(stats, beta.shape[0], reml)
    value = red.logdet_R + dof * (1.0 + _LOG_2PI + jnp.log(pwrss / dof))
    if reml:
        value = value + logdet_X
    return -0.5 * value + stats.half_log_w


def lmm_loglik(params: Params, stats: LMMStats, kernels: Kernels = Kernels()):
    """Exact ML log-likelihood at given (β, L, σ), not profiled."""
    sigma = params.dispersion
    red = _reduce(params.chol / sigma, stats, kernels)
    b = params.beta
    rss = red.ytRy - 2.0 * b @ red.XtRy + b @ red.XtRX @ b
    return -0.5 * (stats.n * (_LOG_2PI + 2.0 * jnp.log(sigma)) + red.logdet_R + rss / sigma**2) + stats.half_log_w


def lmm_reml_loglik(params: Params, stats: LMMStats, kernels: Kernels = Kernels()):
    """Exact REML log-likelihood at given (L, σ); β does not enter (it is profiled by GLS).

    With V = σ²R: ℓ_R = −½ [(n−p) log 2πσ² + log|R| + log|XᵀR⁻¹X| + pwrss/σ²], which at
    σ̂² = pwrss/(n−p) is :func:`profiled_loglik` with ``reml=True``.
    """
    sigma = params.dispersion
    red = _reduce(params.chol / sigma, stats, kernels)
    _, pwrss, logdet_X, _ = _gls(red)
    dof = stats.n - params.beta.shape[0]
    return -0.5 * (dof * (_LOG_2PI + 2.0 * jnp.log(sigma)) + red.logdet_R + logdet_X + pwrss / sigma**2) \
        + stats.half_log_w


def lmm_modes(params: Params, stats: LMMStats, kernels: Kernels = Kernels()):
    """BLUPs b̂ (m, q) and conditional covariances (m, q, q) at given (β, L, σ)."""
    sigma = params.dispersion
    lam = params.chol / sigma
    red = _reduce(lam, stats, kernels)
    u = sm.solve_lower_transpose(red.chol_M, red.r - red.Q @ params.beta)
    return u @ lam.T, sigma**2 * lam @ sm.cho_inverse(red.chol_M) @ lam.T


class LMMSolution(NamedTuple):
    beta: jnp.ndarray
    sigma: jnp.ndarray
    vcov: jnp.ndarray
    D: jnp.ndarray
    chol: jnp.ndarray
    ranef: jnp.ndarray
    cond_var: jnp.ndarray


def lmm_solution(lam, stats: LMMStats, reml: bool, kernels: Kernels = Kernels()) -> LMMSolution:
    """Everything that follows from Λ̂: β̂, σ̂, vcov (conditional on Λ), BLUPs and condVar."""
    red = _reduce(lam, stats, kernels)
    sums = kernels.products_as_sums
    beta, pwrss, _, chol_X = _gls(red)
    sigma2 = pwrss / _dof(stats, beta.shape[0], reml)
    # û_i = M_i⁻¹ Λᵀ Z_iᵀ (y_i − X_i β̂) = C_i⁻ᵀ (r_i − Q_i β̂)
    rhs = red.r - _matmul(red.Q, beta[None, :, None], sums)[..., 0]
    u = sm.solve_lower_transpose(red.chol_M, rhs)
    M_inv = sm.cho_inverse(red.chol_M)
    sigma = jnp.sqrt(sigma2)
    return LMMSolution(
        beta=beta,
        sigma=sigma,
        # the Cholesky inverse of XᵀR⁻¹X, not LU's pivoting loops
        vcov=sigma2 * cho_solve((chol_X, True), jnp.eye(beta.shape[0], dtype=beta.dtype)),
        D=sigma2 * _matmul(lam, lam.T, sums),
        chol=sigma * lam,
        ranef=_row_times(u, lam.T, sums),
        cond_var=sigma2 * _matmul(_matmul(lam[None], M_inv, sums), lam.T[None], sums),
    )
