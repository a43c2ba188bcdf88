"""log|S| and the forms TᵀS⁻¹T of a dense symmetric positive definite S, with a written VJP.

The several-term fits differentiate these through the Schur complement S of their blocked
factorisation. JAX's derivative of a Cholesky factor costs several r×r triangular solves
with matrix right-hand sides; the functions of S themselves need only S⁻¹ once:

    d log|S| = tr(S⁻¹ dS),   d(TᵀS⁻¹T) = dTᵀY + YᵀdT − Yᵀ dS Y,   Y = S⁻¹T,

so S̄ = ḡ S⁻¹ − Y sym(Q̄) Yᵀ and T̄ = Y (Q̄ + Q̄ᵀ) (docs/performance.md). S is read as its
symmetric part, as ``jnp.linalg.cholesky`` reads it, so S̄ is symmetric.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve


def _forward(S, T):
    C = jnp.linalg.cholesky(S)
    Y = cho_solve((C, True), T)
    return (2.0 * jnp.sum(jnp.log(jnp.diagonal(C))), T.T @ Y), (C, Y)


@jax.custom_vjp
def logdet_and_forms(S, T):
    """(log|S|, TᵀS⁻¹T) for S (r, r) symmetric positive definite and T (r, k); k may be 0."""
    return _forward(S, T)[0]


def _fwd(S, T):
    return _forward(S, T)


def _bwd(res, cotangents):
    C, Y = res
    g, Q_bar = cotangents
    S_inv = cho_solve((C, True), jnp.eye(C.shape[0], dtype=C.dtype))
    Q_sym = 0.5 * (Q_bar + Q_bar.T)
    S_bar = g * S_inv - Y @ Q_sym @ Y.T
    return 0.5 * (S_bar + S_bar.T), Y @ (2.0 * Q_sym)


logdet_and_forms.defvjp(_fwd, _bwd)
