"""Model parameters and their unconstrained packing.

The public pytree is :class:`Params` (β, the lower Cholesky factor L of D, and a
dispersion). The optimiser works on one flat vector θ in which the diagonal of L
is on the log scale, so every θ ∈ ℝᵏ is a valid model.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Params(NamedTuple):
    """Parameters of a GLMM.

    beta:       (p,) fixed effects.
    chol:       (q, q) lower-triangular L with D = L Lᵀ and a positive diagonal.
    dispersion: () the family's dispersion (σ for gaussian); 1.0 where the family has none.
    """

    beta: jnp.ndarray
    chol: jnp.ndarray
    dispersion: jnp.ndarray


def n_chol(q: int) -> int:
    return q * (q + 1) // 2


def chol_from_vec(v, q: int):
    """Lower-triangular factor from its packed vector (row-major tril, log diagonal)."""
    rows, cols = np.tril_indices(q)
    vals = jnp.where(jnp.asarray(rows == cols), jnp.exp(v), v)
    return jnp.zeros((q, q), dtype=v.dtype).at[rows, cols].set(vals)


def vec_from_chol(L):
    q = L.shape[-1]
    rows, cols = np.tril_indices(q)
    vals = L[rows, cols]
    return jnp.where(jnp.asarray(rows == cols), jnp.log(vals), vals)


def unpack(theta, p: int, q: int, n_dispersion: int) -> Params:
    beta = theta[:p]
    chol = chol_from_vec(theta[p:p + n_chol(q)], q)
    if n_dispersion:
        dispersion = jnp.exp(theta[p + n_chol(q)])
    else:
        dispersion = jnp.ones((), dtype=theta.dtype)
    return Params(beta, chol, dispersion)


def pack(params: Params, n_dispersion: int):
    parts = [jnp.atleast_1d(params.beta), vec_from_chol(params.chol)]
    if n_dispersion:
        parts.append(jnp.log(jnp.atleast_1d(params.dispersion)))
    return jnp.concatenate(parts)
