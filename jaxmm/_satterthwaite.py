"""Satterthwaite's degrees of freedom for the fixed effects of a linear mixed model, as
lmerTest computes them, with autodiff in place of its finite differences.

For a coefficient βⱼ with variance vⱼ(φ) = [σ²(XᵀR⁻¹X)⁻¹]ⱼⱼ, a function of the variance
parameters φ (the free entries of every L, then σ), and A the asymptotic covariance of φ̂
(the inverse Hessian of −ℓ, REML or ML as fitted, at φ̂):

    df = 2 vⱼ² / (∇vⱼᵀ A ∇vⱼ)

The statistic t = β̂ⱼ/√vⱼ is referred to Student's t on df. The formula is invariant to how
φ parametrises the variances, so the result is lmerTest's, which uses lme4's θ and σ. For an
ML fit the likelihood is the one profiled over β (lmerTest's too).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betainc

from ._jit import compiled
from ._params import chol_from_natural, free_entries, n_chol


def t_two_sided(t, df):
    """P(|T| > |t|) for Student's T on ``df`` degrees of freedom."""
    t, df = jnp.asarray(t), jnp.asarray(df)
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def _pieces(phi, vcov, minus_loglik):
    """(V = vcov(β̂), ∂V/∂φ (p, p, k), A = the inverse Hessian of −ℓ in φ) at φ̂."""
    return vcov(phi), jax.jacfwd(vcov)(phi), jnp.linalg.pinv(jax.hessian(minus_loglik)(phi))


def contrast_df(pieces, C) -> np.ndarray:
    """Satterthwaite's df of every row c of C: 2 (cVcᵀ)² / (∇(cVcᵀ)ᵀ A ∇(cVcᵀ))."""
    V, dV, A = (np.asarray(a) for a in pieces)
    C = np.atleast_2d(C)
    var = np.einsum("ri,ij,rj->r", C, V, C)
    grad = np.einsum("ri,ijk,rj->rk", C, dV, C)
    return 2.0 * var ** 2 / np.einsum("rk,kl,rl->r", grad, A, grad)


# small programs whose compile, not their run, is the cost: LLVM's quick level (_jit)
@compiled(static_argnames=("reml", "structure"), elemental=True, quick=True)
def _one_term(phi, design, reml: bool, structure, kernels=None):
    from ._lmm import _gls, _reduce, lmm_loglik, lmm_reml_loglik, lmm_stats
    from ._params import Params

    stats = lmm_stats(design, phi.dtype, kernels)  # in the program: op by op, each op compiles on its own
    p = stats.XtX.shape[0]
    unpack = lambda v: (chol_from_natural(v[:-1], structure), v[-1])

    def vcov(v):
        L, sigma = unpack(v)
        return sigma ** 2 * jnp.linalg.inv(_reduce(L / sigma, stats, kernels).XtRX)

    def minus_loglik(v):
        L, sigma = unpack(v)
        if reml:
            return -lmm_reml_loglik(Params(jnp.zeros(p, v.dtype), L, sigma), stats, kernels)
        beta = _gls(_reduce(L / sigma, stats, kernels))[0]
        return -lmm_loglik(Params(beta, L, sigma), stats, kernels)

    return _pieces(phi, vcov, minus_loglik)


def _one_term_pieces(res):
    """:func:`_pieces` of a gaussian ``MixedModelResult``."""
    structure = res.D_array.shape[0] if res.re_blocks is None else tuple(res.re_blocks)
    L = np.asarray(res.params.chol)
    phi = np.concatenate([L[free_entries(structure)], [float(res.sigma)]])
    return _one_term(phi, res.design, res.method == "REML", structure)


@compiled(static_argnames=("reml", "structures"), elemental=True, quick=True)
def _terms(phi, design, reml: bool, structures):
    from ._crossed_arrays import exact_loglik, lmm_stats
    from ._crossed_lmm import _gls, reduce

    from ._crossed_engine import split_natural

    stats = lmm_stats(design)
    nc = sum(n_chol(s) for s in structures)
    unpack = lambda v: (split_natural(v[:nc], structures), v[nc])

    def vcov(v):
        chols, sigma = unpack(v)
        return sigma ** 2 * jnp.linalg.inv(reduce(tuple(L / sigma for L in chols), stats, design.terms).XtRX)

    def minus_loglik(v):
        chols, sigma = unpack(v)
        red = reduce(tuple(L / sigma for L in chols), stats, design.terms)
        beta = _gls(red.XtRX, red.XtRy, red.ytRy)[0]
        return -exact_loglik(beta, chols, sigma, stats, design.terms, reml)

    return _pieces(phi, vcov, minus_loglik)


def _terms_pieces(res):
    """:func:`_pieces` of a gaussian ``CrossedResult``."""
    from ._crossed_arrays import fitted_design

    structures = tuple(t.structure for t in res.terms)
    phi = np.concatenate([np.asarray(L)[free_entries(s)] for L, s in zip(res.chols, structures)]
                         + [[float(res.sigma)]])
    return _terms(phi, fitted_design(res), res.method == "REML", structures)


def pieces(res):
    """(V, ∂V/∂φ, A) of a gaussian fit with one or several terms, as numpy arrays (what a
    result keeps once computed: ``TidyViews._satterthwaite``)."""
    out = _terms_pieces(res) if hasattr(res, "terms") else _one_term_pieces(res)
    return tuple(np.asarray(a) for a in out)


def coefficient_df(res) -> np.ndarray:
    """Satterthwaite's df of every fixed effect."""
    return contrast_df(res._satterthwaite, np.eye(len(res.fixef)))


def f_test(pieces_, beta, L) -> tuple[float, int, float, float]:
    """(F, numerator df, denominator df, p) of the hypothesis Lβ = 0, as lmerTest's
    ``contestMD``: F = (Lβ)ᵀ(LVLᵀ)⁻¹(Lβ)/q; LVLᵀ's eigenvectors give q independent contrasts
    with df νᵢ, and the F's denominator df is 2E/(E − q) with E = Σ νᵢ/(νᵢ − 2) over νᵢ > 2."""
    V = np.asarray(pieces_[0])
    L = np.atleast_2d(L)
    q = L.shape[0]
    values, vectors = np.linalg.eigh(L @ V @ L.T)
    contrasts = vectors.T @ L
    F = float(np.sum((contrasts @ beta) ** 2 / values) / q)
    nu = contrast_df(pieces_, contrasts)
    E = float(np.sum(nu[nu > 2] / (nu[nu > 2] - 2.0)))
    ddf = 2.0 * E / (E - q) if E > q else float("nan")
    p = float(betainc(ddf / 2.0, q / 2.0, ddf / (ddf + q * F))) if np.isfinite(ddf) else float("nan")
    return F, q, ddf, p
