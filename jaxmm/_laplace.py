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
from ._types import Design
from ._inner import InnerOptions, linear_parts, mode_and_curvature
from ._params import Params


def _at_mode(params: Params, design: Design, u0, family, options: InnerOptions):
    """Modes û with h(û) (kernel only) and H at û, differentiable in params and design.

    The row and group arithmetic runs in the design's dtype: parameters are cast to it, so
    a float32 design is computed in float32 even when the parameters are float64.
    """
    work = design.X.dtype
    eta_fixed, ZL = linear_parts(design, params.beta, params.chol)
    u, h, H = mode_and_curvature(eta_fixed, ZL, params.dispersion.astype(work), design, u0.astype(work),
                                 family, options)
    return h, H, u


def laplace_loglik(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions(),
                   log_normalizer=None):
    """Laplace marginal log-likelihood and the spherical modes û (returned without gradient).

    ``log_normalizer`` may carry Σ log-normalising constants precomputed by the caller
    (they depend on the data alone for families without a dispersion); by default they
    are computed here.
    """
    h, H, u = _at_mode(params, design, u0, family, options)
    # Group terms are summed in the parameters' precision (float64 unless x64 is off), so
    # a float32 design loses digits per group, not per row of a million-row sum.
    acc = params.beta.dtype
    if log_normalizer is None:
        log_normalizer = jnp.sum(design.weights.astype(acc)
                                 * family.normalizer(design.y.astype(acc), design.trials.astype(acc), params.dispersion))
    logdet = sm.logdet_from_cholesky(sm.cholesky(H))
    value = jnp.sum(h.astype(acc)) - 0.5 * jnp.sum(logdet.astype(acc)) + log_normalizer
    return value, jax.lax.stop_gradient(u)


def modes_and_cond_var(params: Params, design: Design, u0, family, options: InnerOptions = InnerOptions()):
    """BLUPs b̂ = L û (m, q) and their conditional covariances L H⁻¹ Lᵀ (m, q, q)."""
    _, H, u = _at_mode(params, design, u0, family, options)
    H, u = H.astype(params.chol.dtype), u.astype(params.chol.dtype)
    L = params.chol
    b = sm.matmul(u, L.T)
    cond_var = sm.matmul(sm.matmul(L, sm.cho_inverse(sm.cholesky(H))), L.T)
    return b, cond_var, u
