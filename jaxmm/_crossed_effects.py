"""What follows from the several-term fit's estimates: β̂, σ̂ and vcov of the exact LMM, the
BLUPs and the conditional covariances of every term, from the blocked factorisation of
:mod:`._crossed_lmm` (the Laplace fit takes :func:`effects` at its modes)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from . import _smallmat as sm
from . import _nested_chain as chain
from ._crossed_lmm import CrossedStats, Factor, Reduced, Terms, _gls, _solve_c2, first_rows, reduce


class CrossedSolution(NamedTuple):
    beta: jnp.ndarray
    sigma: jnp.ndarray
    vcov: jnp.ndarray
    chols: tuple      # σΛ_k per term: the Cholesky factors of D_k
    ranefs: tuple     # (m_k, q_k) BLUPs per term
    cond_vars: tuple  # (m_k, q_k, q_k) conditional covariances per term
    cross_vars: tuple  # (m, q_a, q_b) between the terms of each pair in ``shared``


def solution(lams, stats: CrossedStats, terms: Terms, reml: bool, shared: tuple = ()) -> CrossedSolution:
    """Everything that follows from Λ̂: β̂, σ̂, vcov (conditional on Λ), BLUPs, conditional
    covariances. The latter are the diagonal blocks of σ²ΛA⁻¹Λᵀ; with W = C₂⁻¹C_cᵀ, those
    of the first term are C₁ᵢ⁻ᵀ(I + W_iᵀW_i)C₁ᵢ⁻¹, those of the others blocks of S⁻¹.

    ``shared`` (static): pairs (a, b), a < b, of terms on one factor (the same levels in the
    same order, as ``(1 | g) + (0 + x | g)``): their level-by-level cross blocks are
    returned too, −C₁ᵢ⁻ᵀ(S⁻¹C_cᵀ)ᵢᵀ where a is the first term, else blocks of S⁻¹."""
    red = reduce(lams, stats, terms)
    beta, pwrss, _, chol_X = _gls(red.XtRX, red.XtRy, red.ytRy)
    p = beta.shape[0]
    sigma2 = pwrss / (stats.n - p if reml else stats.n)
    sigma = jnp.sqrt(sigma2)
    dtype = beta.dtype
    u1, u2 = spherical_modes(red, stats, beta)
    ranefs, cond_vars, cross = effects(Factor(red.C1, red.Cc, red.C2), stats, lams, terms, u1, u2, shared)
    chols = tuple(sigma * lam for lam in lams)
    cond_vars = tuple(sigma2 * v for v in cond_vars)
    cross = tuple(sigma2 * v for v in cross)
    return CrossedSolution(
        beta=beta, sigma=sigma, vcov=sigma2 * cho_solve((chol_X, True), jnp.eye(p, dtype=dtype)),
        chols=chols, ranefs=ranefs, cond_vars=cond_vars, cross_vars=cross,
    )


def spherical_modes(red: Reduced, stats: CrossedStats, beta):
    """The spherical effects (u₁, u₂) at β, by back substitution through the reduced factor:
    u₂ = C₂⁻ᵀ(c₂ − P₂β), u₁ = C₁⁻ᵀ(c₁ − P₁β − C_c u₂)."""
    u2 = _solve_c2(red.C2, red.c2 - jnp.einsum("rp,p->r", red.P2, beta), trans=True)
    u2_pad = jnp.concatenate([u2, jnp.zeros((1,), u2.dtype)])
    per_cell = jnp.einsum("cia,ca->ci", red.Cc, u2_pad[stats.cell_cols])
    t1 = (red.c1 - jnp.einsum("mip,p->mi", red.P1, beta)).at[stats.cell_level].add(-per_cell)
    return sm.solve_lower_transpose(red.C1, t1), u2


def effects(f: Factor, stats: CrossedStats, lams, terms: Terms, u1, u2, shared: tuple = ()):
    """(b per term, the diagonal blocks of ΛA⁻¹Λᵀ per term and level, and the cross blocks of
    the pairs in ``shared``) from the spherical effects u and the factor of A. With
    W = C₂⁻¹C_cᵀ, the first term's blocks of A⁻¹ are C₁ᵢ⁻ᵀ(I + W_iᵀW_i)C₁ᵢ⁻¹, the others'
    blocks of S⁻¹; a cross block with the first term is −C₁ᵢ⁻ᵀ(S⁻¹C_cᵀ)ᵢᵀ."""
    r, q1, m1 = terms.rest, terms.q[0], terms.m[0]
    dtype = u1.dtype
    C2 = f.C2
    sandwich = lambda a, V, b: jnp.einsum("ij,mjk,lk->mil", a, V, b)
    lam1 = lams[0]
    if terms.nested:
        # the inverse's blocks over each level and its ancestors, the outermost term's first
        # (_nested_chain.extend): a level's conditional covariance is their top-left block, a
        # cross block between two terms on one factor the block at the later term's columns
        F1, parent = first_rows(f.Cc, stats, terms)
        above = chain.inverse_blocks(C2)
        full = [chain.extend(f.C1, F1, above[0][parent])] + above
        cross = []
        for a, b in shared:
            at = sum(terms.q[a:b])
            cross.append(sandwich(lams[a], full[a][:, :terms.q[a], at:at + terms.q[b]], lams[b]))
        ranefs, cond_vars = [u1 @ lam1.T], []
        for lam, off, q, m in zip(lams[1:], terms.offsets(), terms.q[1:], terms.m[1:]):
            ranefs.append(u2[off:off + q * m].reshape(m, q) @ lam.T)
        for lam, blocks, q in zip(lams, full, terms.q):
            cond_vars.append(sandwich(lam, blocks[:, :q, :q], lam))
        return tuple(ranefs), tuple(cond_vars), tuple(cross)
    C1inv = sm.solve_lower(f.C1, jnp.broadcast_to(jnp.eye(q1, dtype=dtype), f.C1.shape))
    # W_iᵀW_i = Σ over the pairs of cells c, d of level i of C_c,c S⁻¹[cols c, cols d] C_c,dᵀ: the
    # Schur complement's pairs again, never the dense r × m₁q₁ W (16 GB at 500k levels × 2k)
    S_inv = cho_solve((C2, True), jnp.eye(r, dtype=dtype))
    S_pad = jnp.zeros((r + 1, r + 1), dtype).at[:r, :r].set(S_inv)  # the padding column r is 0
    pa, pb, cols = stats.pair_a, stats.pair_b, stats.cell_cols
    X = jnp.einsum("pia,pab,pjb->pij", f.Cc[pa], S_pad[cols[pa][:, :, None], cols[pb][:, None, :]], f.Cc[pb])
    X = X + jnp.where((pa != pb)[:, None, None], jnp.swapaxes(X, 1, 2), 0.0)  # pairs a < b count both ways
    inner = jnp.eye(q1, dtype=dtype)[None] + jax.ops.segment_sum(X, stats.cell_level[pa], m1)
    A11 = jnp.swapaxes(C1inv, 1, 2) @ inner @ C1inv
    rest = lams[1:]
    index = [None] + [off + jnp.arange(m)[:, None] * q + jnp.arange(q)[None, :]
                      for off, q, m in zip(terms.offsets(), terms.q[1:], terms.m[1:])]
    cross = []
    for a, b in shared:
        if a == 0:
            # (S⁻¹C_cᵀ) at term b's effects of level i: a sum over the level's cells
            rows = index[b][stats.cell_level]  # (cells, q_b)
            per_cell = jnp.einsum("cba,cia->cbi", S_pad[rows[:, :, None], cols[:, None, :]], f.Cc)
            V = jax.ops.segment_sum(per_cell, stats.cell_level, m1)  # (m₁, q_b, q₁)
            block = -jnp.swapaxes(C1inv, 1, 2) @ jnp.swapaxes(V, 1, 2)
        else:
            block = S_inv[index[a][:, :, None], index[b][:, None, :]]
        cross.append(sandwich(lams[a], block, lams[b]))
    ranefs, cond_vars = [u1 @ lam1.T], [sandwich(lam1, A11, lam1)]
    for lam, idx in zip(rest, index[1:]):
        ranefs.append(u2[idx] @ lam.T)
        cond_vars.append(sandwich(lam, S_inv[idx[:, :, None], idx[:, None, :]], lam))
    return tuple(ranefs), tuple(cond_vars), tuple(cross)
