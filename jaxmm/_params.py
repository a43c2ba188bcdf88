"""Model parameters and every flat vector they are packed into.

The public pytree is :class:`Params` (β, the lower Cholesky factor L of D, and a
dispersion). Two flat vectors share one layout, [β | free entries of L | log dispersion]:

- θ, the optimiser's vector, with L's diagonal on the log scale, so every θ ∈ ℝᵏ is a
  valid model (:func:`pack`, :func:`unpack`);
- φ, the natural parameters the objectives take, with L's entries as they are, so smooth
  through a boundary L_kk = 0 (:func:`natural_from_params`, :func:`params_from_natural`).

The driver maps θ to φ by exp() on :func:`layout_masks`' diagonal entries.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class Params(NamedTuple):
    """The parameters of a one-term model, as ``marginal_loglik`` takes them (a pytree).

    Attributes
    ----------
    beta : jax.Array
        (p,) fixed effects.
    chol : jax.Array
        (q, q) lower-triangular L with D = L Lᵀ.
    dispersion : jax.Array
        () the family's dispersion (σ for gaussian); 1.0 where the family has none.

    Examples
    --------
    >>> import jaxmm
    >>> res = jaxmm.fit_example("sleepstudy")
    >>> res.params.chol.round(3)
    array([[24.74 ,  0.   ],
           [ 0.388,  5.909]])
    """

    beta: jnp.ndarray
    chol: jnp.ndarray
    dispersion: jnp.ndarray


def free_entries(q):
    """(rows, cols) of the free entries of L, row-major within each block.

    ``q`` is the number of random effects (one correlated block, ``(x | g)``) or a tuple of
    block sizes: ``(1, 1)`` for lme4's ``(x || g)``, where D is diagonal. L is block
    diagonal, lower triangular inside each block.
    """
    blocks = (q,) if isinstance(q, (int, np.integer)) else tuple(q)
    rows, cols, start = [], [], 0
    for b in blocks:
        r, c = np.tril_indices(b)
        rows.append(r + start)
        cols.append(c + start)
        start += b
    return np.concatenate(rows), np.concatenate(cols)


def scalar_blocks(q) -> np.ndarray:
    """Over the free entries of L (``free_entries`` order): the entries that are a block of
    their own, L_jj with D_jj = L_jj² (a random intercept alone, or every term of
    ``(x || g)``). The likelihood is even in such an entry, so stationary at 0 where a
    boundary fit puts it, and it shares no correlation with another effect."""
    rows, cols = free_entries(q)
    return (rows == cols) & (np.bincount(cols)[cols] == 1) & (np.bincount(rows)[rows] == 1)


def re_dim(q) -> int:
    return int(q) if isinstance(q, (int, np.integer)) else int(sum(q))


def n_chol(q) -> int:
    return len(free_entries(q)[0])


def chol_from_vec(v, q):
    """L from its packed vector (free entries, log diagonal); ``q`` as in :func:`free_entries`."""
    rows, cols = free_entries(q)
    vals = jnp.where(jnp.asarray(rows == cols), jnp.exp(v), v)
    d = re_dim(q)
    return jnp.zeros((d, d), dtype=v.dtype).at[rows, cols].set(vals)


def vec_from_chol(L, q=None):
    rows, cols = free_entries(L.shape[-1] if q is None else q)
    vals = L[rows, cols]
    return jnp.where(jnp.asarray(rows == cols), jnp.log(vals), vals)


def unpack(theta, p: int, q, n_dispersion: int) -> Params:
    beta = theta[:p]
    chol = chol_from_vec(theta[p:p + n_chol(q)], q)
    if n_dispersion:
        dispersion = jnp.exp(theta[p + n_chol(q)])
    else:
        dispersion = jnp.ones((), dtype=theta.dtype)
    return Params(beta, chol, dispersion)


def pack(params: Params, n_dispersion: int, q=None):
    parts = [jnp.atleast_1d(params.beta), vec_from_chol(params.chol, q)]
    if n_dispersion:
        parts.append(jnp.log(jnp.atleast_1d(params.dispersion)))
    return jnp.concatenate(parts)


def chol_from_natural(v, q):
    """L from its free entries as they are (φ's part for L); ``q`` as in :func:`free_entries`."""
    rows, cols = free_entries(q)
    d = re_dim(q)
    return jnp.zeros((d, d), dtype=v.dtype).at[rows, cols].set(v)


def natural_from_params(params: Params, n_dispersion: int, q=None):
    """φ: β, the free entries of L as they are, and the log dispersion (where the family has one)."""
    rows, cols = free_entries(params.chol.shape[0] if q is None else q)
    return jnp.concatenate([params.beta, params.chol[rows, cols]]
                           + ([jnp.log(params.dispersion)[None]] if n_dispersion else []))


def params_from_natural(phi, p: int, q, n_dispersion: int) -> Params:
    """The inverse of :func:`natural_from_params`, for ``p`` fixed effects."""
    nc = n_chol(q)
    chol = chol_from_natural(phi[p:p + nc], q)
    disp = jnp.exp(phi[p + nc]) if n_dispersion else jnp.ones((), phi.dtype)
    return Params(phi[:p], chol, disp)


def layout_masks(p: int, q, n_dispersion: int):
    """Over θ's (and φ's) entries: (the diagonal entries of L, those of them that are a
    block of their own, :func:`scalar_blocks`), as boolean arrays."""
    rows, cols = free_entries(q)
    nc = len(rows)
    diag, scalar = np.zeros(p + nc + n_dispersion, bool), np.zeros(p + nc + n_dispersion, bool)
    diag[p:p + nc] = rows == cols
    scalar[p:p + nc] = scalar_blocks(q)
    return diag, scalar


def same_block(structure, i: int, j: int) -> bool:
    """Whether effects i and j are in one block of D's ``structure`` (q, or block sizes)."""
    if isinstance(structure, (int, np.integer)):
        return True
    block_of = np.repeat(np.arange(len(structure)), structure)
    return block_of[i] == block_of[j]
