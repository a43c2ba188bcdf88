"""The Laplace-approximated marginal log-likelihood.

With b = L u and H_i = (ZL)_iᵀ W_i (ZL)_i + I at the conditional mode û_i,

    log p(y) ≈ Σ_i [ log p(y_i | û_i) − ½‖û_i‖² − ½ log|H_i| ]

which equals Σ_i [ℓ_i(b̂_i) − ½ b̂_iᵀD⁻¹b̂_i − ½ log|D H_i^b|] in the b scale, and
stays finite when D is singular. log p(y | b) carries every normalising constant, so the
value is the log-likelihood lme4 and glmmTMB report.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _smallmat as sm
from ._design import Design
from ._inner import InnerOptions, conditional_modes, group_hessian, linear_predictor
from ._params import Params


def laplace_terms(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions()):
    """Per-group Laplace log-likelihood contributions (m,), with the modes û and H."""
    eta_fixed = design.X @ params.beta + design.offset
    ZL = design.Z @ params.chol
    u = conditional_modes(eta_fixed, ZL, params.dispersion, design, u0, family, options)
    eta = linear_predictor(u, eta_fixed, ZL, design)
    ll = family.logpdf(design.y, eta, design.trials, params.dispersion)
    ll_group = jax.ops.segment_sum(ll, design.group, num_segments=design.n_groups, indices_are_sorted=True)
    H = group_hessian(u, eta_fixed, ZL, params.dispersion, design, family)
    logdet_H = sm.logdet_from_cholesky(sm.cholesky(H))
    terms = ll_group - 0.5 * jnp.sum(u * u, axis=1) - 0.5 * logdet_H
    return terms, u, H


def laplace_loglik(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions()):
    """Laplace marginal log-likelihood and the spherical modes û (returned without gradient)."""
    terms, u, _ = laplace_terms(params, design, u0, family, options)
    return jnp.sum(terms), jax.lax.stop_gradient(u)


def modes_and_cond_var(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions()):
    """BLUPs b̂ = L û (m, q) and their conditional covariances L H⁻¹ Lᵀ (m, q, q)."""
    _, u, H = laplace_terms(params, design, u0, family, options)
    L = params.chol
    b = u @ L.T
    cond_var = L @ sm.cho_inverse(sm.cholesky(H)) @ L.T
    return b, cond_var, u
