"""The Laplace log-likelihood of a GLMM with several random-effect terms.

    ℓ(β, Λ, φ) ≈ Σ log p(y | η(û)) − ½‖û‖² − ½ log|I + ΛᵀZᵀW(û)ZΛ|,   η(u) = Xβ + o + ZΛu,

with û the joint mode of every term's spherical effects u = (u₁, u₂) and W the observed
information −∂²log p/∂η². The modes come from Newton's method on the blocked system of
:mod:`._crossed_lmm` (``factor``/``solve``), whose Gram pieces are the weighted sums of each
iteration (Z₁ᵀWZ₁ by level, Z₁ᵀWZ₂ by cell, Z₂ᵀWZ₂ dense). Derivatives in θ: the modes are
found without gradients, then moved by one Newton step that is differentiated; at the mode
its derivative is the implicit function theorem's dû/dθ = H⁻¹∂g/∂θ, so ℓ's gradient is exact.

The rows may be float32 (``fit(dtype="float32")``): η and the family's per-row terms are then
computed in float32, and every sum over rows (the Gram pieces, the score, ℓ) is taken in the
parameters' float64, as the one-term fit does, so the blocked factorisation is float64 alone.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._pages import small_pages
from ._crossed_lmm import (CrossedStats, Terms, _rest_lam_t, crossed_stats, factor, logdet, rest_columns, rest_lam,
                           solve)


class CrossedRows(NamedTuple):
    y: jnp.ndarray        # (n,)
    X: jnp.ndarray        # (n, p)
    offset: jnp.ndarray   # (n,)
    trials: jnp.ndarray   # (n,)
    Z1: jnp.ndarray       # (n, q₁) the first term's effects
    g1: jnp.ndarray       # (n,) its level
    rc: jnp.ndarray       # (n, J) the other terms' columns among the r (r where padded), J = (K−1)q̄
    rv: jnp.ndarray       # (n, J) their Z entries (0 where padded)
    cells: CrossedStats   # the cells, their pairs and each row's cells (Gram fields unused)
    mask: jnp.ndarray | None = None  # (n,) 0 on padding rows (devices=: _crossed_shard), else None


@small_pages()
def crossed_rows(y, X, Zs, codes, terms: Terms, offset=None, trials=None, dtype="float64") -> CrossedRows:
    """The rows on the device (their floats as ``dtype``), the first term first."""
    n = y.shape[0]
    cells = crossed_stats(np.zeros(n), np.zeros((n, 1)), Zs, codes, terms)  # the cells; Gram fields unused
    cols, vals = rest_columns([np.asarray(Z, float) for Z in Zs], codes, terms)
    floats = lambda a: jnp.asarray(np.asarray(a, dtype))
    return CrossedRows(
        y=floats(y), X=floats(X), offset=floats(np.zeros(n) if offset is None else offset),
        trials=floats(np.ones(n) if trials is None else trials),
        Z1=floats(Zs[0]), g1=jnp.asarray(codes[0]),
        rc=jnp.asarray(cols.reshape(n, -1)), rv=floats(vals.reshape(n, -1)), cells=cells,
    )


def widened(rows: CrossedRows, dtype) -> CrossedRows:
    """The rows with their floats as ``dtype`` (for sums taken row by row in float64)."""
    floats = ("y", "X", "offset", "trials", "Z1", "rv") + (() if rows.mask is None else ("mask",))
    return rows._replace(**{k: getattr(rows, k).astype(dtype) for k in floats})


def eta_of(beta, lams, u1, u2, rows: CrossedRows, terms: Terms):
    """η in the rows' dtype."""
    work = rows.X.dtype
    b1 = (u1 @ lams[0].T).astype(work)
    b2 = jnp.concatenate([rest_lam(lams[1:], u2, terms), jnp.zeros((1,), u2.dtype)]).astype(work)
    return (rows.X @ beta.astype(work) + rows.offset + jnp.sum(rows.Z1 * b1[rows.g1], axis=1)
            + jnp.sum(rows.rv * b2[rows.rc], axis=1))


def _per_row(family, rows: CrossedRows, eta, dispersion):
    """(kernel, score, weight) of every row, in the rows' dtype; 0 on padding rows."""
    out = family.kernel_and_derivatives(rows.y, eta, rows.trials, dispersion.astype(rows.X.dtype))
    return tuple(_masked(rows, v) for v in out)


def _masked(rows: CrossedRows, values):
    return values if rows.mask is None else values * rows.mask.astype(values.dtype)


def _gram(w, rows: CrossedRows, terms: Terms, acc=None) -> CrossedStats:
    """The weighted Gram pieces, in the statistics' places, summed as ``acc`` (float64 unless
    x64 is off; the row products are in the rows' dtype)."""
    acc = jnp.result_type(float) if acc is None else acc
    m1, r = terms.m[0], terms.rest
    n_cells = rows.cells.cell_level.shape[0]
    Z1w = rows.Z1 * w[:, None]
    Z1tZ1 = jax.ops.segment_sum((Z1w[:, :, None] * rows.Z1[:, None, :]).astype(acc), rows.g1, m1)
    k_terms = rows.cells.row_cell.shape[1]
    qbar = rows.rv.shape[1] // k_terms
    rv = rows.rv.reshape(rows.rv.shape[0], k_terms, qbar)
    Z1tZ2 = sum(jax.ops.segment_sum((Z1w[:, :, None] * rv[:, k, None, :]).astype(acc), rows.cells.row_cell[:, k],
                                    n_cells)
                for k in range(k_terms))
    wv = rows.rv * w[:, None]
    if terms.nested:  # Z₂ᵀWZ₂'s rows in the chain's pattern: each level against its own and its ancestors' effects
        Z2tZ2 = []
        for k in range(k_terms):
            q = terms.q[k + 1]
            own = rv[:, k, :q] * w[:, None]
            right = jnp.concatenate([rv[:, j, :terms.q[j + 1]] for j in range(k, k_terms)], axis=1)
            level = (rows.rc[:, k * qbar] - terms.offsets()[k]) // q  # padding rows: past the last level, dropped
            Z2tZ2.append(jax.ops.segment_sum((own[:, :, None] * right[:, None, :]).astype(acc), level, terms.m[k + 1]))
        Z2tZ2 = tuple(Z2tZ2)
    else:
        Z2tZ2 = jnp.zeros((r + 1, r + 1), acc).at[rows.rc[:, :, None], rows.rc[:, None, :]].add(
            (wv[:, :, None] * rows.rv[:, None, :]).astype(acc))[:r, :r]
    return rows.cells._replace(Z1tZ1=Z1tZ1, Z1tZ2=Z1tZ2, Z2tZ2=Z2tZ2)


def _score(s, u1, u2, lams, rows: CrossedRows, terms: Terms):
    """g = ΛᵀZᵀs − u, the gradient of Σ log p − ½‖u‖² in u."""
    m1, r, acc = terms.m[0], terms.rest, u1.dtype
    g1 = jax.ops.segment_sum((rows.Z1 * s[:, None]).astype(acc), rows.g1, m1) @ lams[0] - u1
    z2s = jnp.zeros((r + 1,), acc).at[rows.rc].add((rows.rv * s[:, None]).astype(acc))[:r]
    return g1, _rest_lam_t(lams[1:], z2s, terms) - u2


def _value(beta, lams, dispersion, u1, u2, rows, terms, family):
    """Σ kernel − ½‖u‖² at u: what a step is judged by (no weights, no factor)."""
    eta = eta_of(beta, lams, u1, u2, rows, terms)
    kern = _masked(rows, family.kernel(rows.y, eta, rows.trials, dispersion.astype(eta.dtype)))
    return jnp.sum(kern.astype(u1.dtype)) - 0.5 * (jnp.sum(u1 * u1) + jnp.sum(u2 * u2))


def _at(beta, lams, dispersion, u1, u2, rows, terms, family):
    """(Σ kernel − ½‖u‖², g, the factor of H) at u."""
    eta = eta_of(beta, lams, u1, u2, rows, terms)
    kern, s, w = _per_row(family, rows, eta, dispersion)
    g1, g2 = _score(s, u1, u2, lams, rows, terms)
    value = jnp.sum(kern.astype(u1.dtype)) - 0.5 * (jnp.sum(u1 * u1) + jnp.sum(u2 * u2))
    return value, (g1, g2), factor(lams, _gram(w, rows, terms, u1.dtype), terms)


class InnerState(NamedTuple):
    u1: jnp.ndarray
    u2: jnp.ndarray
    f: object            # the factor of H at u (a Factor), once the loop has run
    decrement: jnp.ndarray
    it: jnp.ndarray
    done: jnp.ndarray


def modes(beta, lams, dispersion, u1, u2, rows: CrossedRows, terms: Terms, family, max_iter: int = 50,
          tol: float = 1e-20):
    """The joint mode û by Newton's method, halving a step that lowers the objective, and the
    factor of H there. It stops at a point whose Newton decrement is below ``tol`` (or has
    stopped shrinking quadratically, at the rounding of the gradient) without taking that
    step: the caller's differentiated Newton step is it, with the factor returned here."""
    def body(state):
        value, (g1, g2), f = _at(beta, lams, dispersion, state.u1, state.u2, rows, terms, family)
        d1, d2 = solve(f, rows.cells, g1, g2)
        decrement = jnp.sum(g1 * d1) + jnp.sum(g2 * d2)
        converged = (decrement < tol) | ((decrement < 1e-10) & (decrement > 1e-3 * state.decrement))

        def halve(c):
            step, _ = c
            return step * 0.5, _value(beta, lams, dispersion, state.u1 + step * 0.5 * d1, state.u2 + step * 0.5 * d2,
                                      rows, terms, family)

        first = _value(beta, lams, dispersion, state.u1 + d1, state.u2 + d2, rows, terms, family)
        step, new = jax.lax.while_loop(lambda c: ~(c[1] >= value - 1e-12 * jnp.abs(value)) & (c[0] > 1e-4),
                                       halve, (jnp.ones((), value.dtype), first))
        move = (new >= value - 1e-12 * jnp.abs(value)) & ~converged
        return InnerState(jnp.where(move, state.u1 + step * d1, state.u1), jnp.where(move, state.u2 + step * d2,
                          state.u2), f, decrement, state.it + 1, ~move)

    f0 = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                      jax.eval_shape(lambda: _at(beta, lams, dispersion, u1, u2, rows, terms, family)[2]))
    start = InnerState(u1, u2, f0, jnp.asarray(jnp.inf, beta.dtype), jnp.zeros((), jnp.int32), jnp.zeros((), bool))
    out = jax.lax.while_loop(lambda s: ~s.done & (s.it < max_iter), body, start)
    return out.u1, out.u2, out.f


def laplace_loglik(beta, lams, dispersion, rows: CrossedRows, terms: Terms, family, u1, u2):
    """(ℓ, (û₁, û₂)): the Laplace log-likelihood and the modes (to warm-start the next call)."""
    consts = jax.lax.stop_gradient((beta, lams, dispersion))
    m1, m2, f = jax.lax.stop_gradient(modes(*consts, u1, u2, rows, terms, family))
    # one differentiated Newton step from the mode: exact first derivatives (module doc)
    eta = eta_of(beta, lams, m1, m2, rows, terms)
    _, s, _ = _per_row(family, rows, eta, dispersion)
    d1, d2 = solve(f, rows.cells, *_score(s, m1, m2, lams, rows, terms))
    v1, v2 = m1 + d1, m2 + d2
    eta = eta_of(beta, lams, v1, v2, rows, terms)
    _, _, w = _per_row(family, rows, eta, dispersion)
    # the log-density's normalising terms (log-gammas) in float64 from the rows' values:
    # they are large and cancel in no difference
    acc = m1.dtype
    logp = jnp.sum(_masked(rows, family.logpdf(rows.y.astype(acc), eta.astype(acc), rows.trials.astype(acc),
                                               dispersion)))
    log_det = logdet(lams, _gram(w, rows, terms, acc), terms)
    return logp - 0.5 * (jnp.sum(v1 * v1) + jnp.sum(v2 * v2)) - 0.5 * log_det, (m1, m2)
