"""The exact linear mixed model with several random-effect terms: blocked profiled ML and REML.

Terms k = 1..K, each a grouping factor with m_k levels and q_k effects, b_k ~ N(0, σ² Λ_k Λ_kᵀ)
independently. The first term is the one with the most levels. In spherical coordinates
u = Λ⁻¹b the penalised system is A = I + ΛᵀZᵀZΛ, which splits as

    A = [[M₁, B], [Bᵀ, A₂₂]],   M₁ block diagonal over the first factor's levels (q₁×q₁),

and is factored blockwise: C₁ = chol(M₁) level by level, C_c = C₁⁻¹B, the Schur complement
S = A₂₂ − C_cᵀC_c over the other terms' r = Σ_{k≥2} m_k q_k effects, and one dense C₂ = chol(S)
(or, when the terms are nested in one another, S and C₂ in the block-sparse pattern of
:mod:`._nested_chain`).
C_c is sparse: a first-factor level meets only the other levels it shares rows with (its
"cells"), so C_cᵀC_c is a sum over pairs of cells of one first-factor level, never a product
over all of them. log|A| = Σ log|M₁ᵢ| + log|S|, and the X and y columns are eliminated the
same way, giving the profiled criteria of :mod:`._lmm` (MATH.md):

    ML:    ℓ   = −½ [ log|A| + n (1 + log(2π·pwrss/n)) ]
    REML:  ℓ_R = −½ [ log|A| + log|XᵀR⁻¹X| + (n−p)(1 + log(2π·pwrss/(n−p))) ]

The statistics (ZᵀZ by blocks, ZᵀX, Zᵀy, the cells and their pairs) are computed once per
dataset; each evaluation costs O(m₁q₁²p + pairs·q² + r³/3), independent of the rows.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve, solve_triangular

from . import _smallmat as sm
from . import _nested_chain as chain
from ._pages import small_pages
from ._spd import logdet_and_forms
from .errors import DataError

_LOG_2PI = 1.8378770664093453


class Terms(NamedTuple):
    """The static shape of the terms: ``q[k]`` effects and ``m[k]`` levels of term k, the
    first term first (the one with the most levels)."""

    q: tuple
    m: tuple
    # a chain: every term nested in the next (each of its levels meets one level of the next
    # term), so S keeps the block-sparse pattern of _nested_chain however many levels
    nested: bool = False

    @property
    def rest(self) -> int:
        """r: the other terms' effects, level-major within each term."""
        return sum(q * m for q, m in zip(self.q[1:], self.m[1:]))

    @property
    def q_rest(self) -> int:
        return max(self.q[1:])

    def offsets(self) -> list:
        out, at = [], 0
        for q, m in zip(self.q[1:], self.m[1:]):
            out.append(at)
            at += q * m
        return out


# The other terms' effects are one dense matrix (r × r, float64): 20,000 of them take 3 GiB.
MAX_DENSE_EFFECTS = 20_000


def plan_terms(q, m, codes, labels, distinct=None) -> tuple[tuple, Terms]:
    """(the terms' order, their :class:`Terms`) from each term's effects ``q[k]``, levels
    ``m[k]`` and row codes: the factor with the most levels first (MixedModels.jl's order),
    ties in the given order; nested when in that order every term's levels lie each inside one
    level of the next (class in school in district, or two terms on one factor), so that the
    remainder stays block sparse however many levels. A dense remainder over
    :data:`MAX_DENSE_EFFECTS` is refused, naming ``labels``. ``distinct(keys)``: how many
    distinct values the keys of all the rows hold, where ``codes`` are some of them (a process's)."""
    distinct = distinct or (lambda keys: np.unique(keys).size)
    order = tuple(sorted(range(len(q)), key=lambda k: -m[k]))
    nested = all(distinct(np.asarray(codes[a], np.int64) * m[b] + codes[b]) == m[a]
                 for a, b in zip(order, order[1:]))
    terms = Terms(q=tuple(int(q[k]) for k in order), m=tuple(int(m[k]) for k in order), nested=bool(nested))
    if terms.rest > MAX_DENSE_EFFECTS and not nested:
        raise DataError(f"the random-effect terms after the first ({', '.join(str(labels[k]) for k in order[1:])}) "
                        f"have {terms.rest:,} effects: their dense {terms.rest:,}² matrix would take "
                        f"{terms.rest ** 2 * 8 / 2**30:.1f} GiB; at most {MAX_DENSE_EFFECTS:,} are fitted")
    return order, terms


class CrossedStats(NamedTuple):
    Z1tZ1: jnp.ndarray  # (m₁, q₁, q₁)
    Z1tX: jnp.ndarray   # (m₁, q₁, p)
    Z1ty: jnp.ndarray   # (m₁, q₁)
    Z2tZ2: jnp.ndarray  # (r, r), or nested: per other term its levels' rows (m_k, q_k, Q_k) (_nested_chain)
    Z2tX: jnp.ndarray   # (r, p)
    Z2ty: jnp.ndarray   # (r,)
    cell_level: jnp.ndarray  # (c,) the first-factor level of each cell
    cell_term: jnp.ndarray   # (c,) which other term (0 = term 2)
    cell_cols: jnp.ndarray   # (c, q̄) its effects' columns among the r, r where padded
    Z1tZ2: jnp.ndarray       # (c, q₁, q̄) the cell's Z₁ᵀZ_k block, zero where padded
    pair_a: jnp.ndarray      # (n_pairs,) pairs a ≤ b of cells of one first-factor level
    pair_b: jnp.ndarray
    row_cell: jnp.ndarray    # (n, K−1) each row's cell in each other term (the Laplace fit's sums)
    XtX: jnp.ndarray
    Xty: jnp.ndarray
    yty: jnp.ndarray
    n: jnp.ndarray
    half_log_w: jnp.ndarray
    parents: tuple = ()  # nested: per other term but the last, each level's level in the next


def rest_columns(Zs, codes, terms: Terms):
    """Every row's columns among the other terms' r effects, (n, K−1, q̄) padded with r, and
    its Z entries there (0 where padded)."""
    n, offsets = Zs[0].shape[0], terms.offsets()
    cols = np.full((n, len(Zs) - 1, terms.q_rest), terms.rest)
    vals = np.zeros((n, len(Zs) - 1, terms.q_rest))
    for k in range(1, len(Zs)):
        qk = terms.q[k]
        cols[:, k - 1, :qk] = offsets[k - 1] + np.asarray(codes[k])[:, None] * qk + np.arange(qk)
        vals[:, k - 1, :qk] = Zs[k]
    return cols, vals


@small_pages()
def crossed_stats(y, X, Zs, codes, terms: Terms, weights=None, offset=None) -> CrossedStats:
    """The statistics on the host (numpy, float64). ``Zs[k]`` is (n, q_k) and ``codes[k]``
    (n,) the level of term k in [0, m_k), the first term first."""
    y, X = np.asarray(y, float), np.asarray(X, float)
    n = y.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if offset is not None:
        y = y - np.asarray(offset, float)
    sw = np.sqrt(w)
    Xw, yw = X * sw[:, None], y * sw
    Zw = [np.asarray(Z, float) * sw[:, None] for Z in Zs]
    g1, q1, m1 = np.asarray(codes[0]), terms.q[0], terms.m[0]
    Z1 = Zw[0]
    Z1tZ1 = np.zeros((m1, q1, q1))
    np.add.at(Z1tZ1, g1, Z1[:, :, None] * Z1[:, None, :])
    Z1tX = np.zeros((m1, q1, X.shape[1]))
    np.add.at(Z1tX, g1, Z1[:, :, None] * Xw[:, None, :])
    Z1ty = np.zeros((m1, q1))
    np.add.at(Z1ty, g1, Z1 * yw[:, None])

    r, qbar = terms.rest, terms.q_rest
    cols, vals = rest_columns(Zw, codes, terms)
    flat_c, flat_v = cols.reshape(n, -1), vals.reshape(n, -1)
    parents = ()
    if terms.nested:  # Z₂ᵀZ₂ in the chain's pattern: a level's rows against its own and its ancestors' effects
        Z2tZ2 = []
        for k in range(1, len(Zs)):
            right = np.concatenate(Zw[k:], axis=1)
            block = np.zeros((terms.m[k], terms.q[k], right.shape[1]))
            np.add.at(block, np.asarray(codes[k]), Zw[k][:, :, None] * right[:, None, :])
            Z2tZ2.append(jnp.asarray(block))
        Z2tZ2 = tuple(Z2tZ2)
        parents = []
        for k in range(1, len(Zs) - 1):
            parent = np.zeros(terms.m[k], np.int64)
            parent[np.asarray(codes[k])] = np.asarray(codes[k + 1])
            parents.append(jnp.asarray(parent))
        parents = tuple(parents)
    else:
        Z2tZ2 = np.zeros((r + 1, r + 1))
        np.add.at(Z2tZ2, (flat_c[:, :, None], flat_c[:, None, :]), flat_v[:, :, None] * flat_v[:, None, :])
        Z2tZ2 = Z2tZ2[:r, :r]
    Z2tX = np.zeros((r + 1, X.shape[1]))
    np.add.at(Z2tX, flat_c, flat_v[:, :, None] * Xw[:, None, :])
    Z2ty = np.zeros(r + 1)
    np.add.at(Z2ty, flat_c, flat_v * yw[:, None])

    # cells: distinct (first-factor level, other term, its level)
    levels, terms_of, blocks, cell_cols, row_cells, start = [], [], [], [], [], 0
    for k in range(1, len(Zs)):
        key = g1.astype(np.int64) * terms.m[k] + np.asarray(codes[k])
        uniq, inverse = np.unique(key, return_inverse=True)
        block = np.zeros((uniq.size, q1, qbar))
        np.add.at(block, inverse, Z1[:, :, None] * vals[:, k - 1, None, :])
        levels.append(uniq // terms.m[k])
        terms_of.append(np.full(uniq.size, k - 1))
        blocks.append(block)
        first = np.zeros(uniq.size, np.int64)
        first[inverse] = np.arange(n)
        cell_cols.append(cols[first, k - 1])
        row_cells.append(start + inverse)
        start += uniq.size
    cell_level = np.concatenate(levels)
    order = np.argsort(cell_level, kind="stable")
    position = np.empty(order.size, np.int64)
    position[order] = np.arange(order.size)
    cell_level = cell_level[order]
    cell_term = np.concatenate(terms_of)[order]
    Z1tZ2 = np.concatenate(blocks)[order]
    cell_cols = np.concatenate(cell_cols)[order]
    pair_a, pair_b = cell_pairs(cell_level, m1)
    return CrossedStats(
        Z1tZ1=jnp.asarray(Z1tZ1), Z1tX=jnp.asarray(Z1tX), Z1ty=jnp.asarray(Z1ty),
        Z2tZ2=Z2tZ2 if terms.nested else jnp.asarray(Z2tZ2), Z2tX=jnp.asarray(Z2tX[:r]), Z2ty=jnp.asarray(Z2ty[:r]),
        cell_level=jnp.asarray(cell_level), cell_term=jnp.asarray(cell_term), cell_cols=jnp.asarray(cell_cols),
        Z1tZ2=jnp.asarray(Z1tZ2), pair_a=jnp.asarray(pair_a), pair_b=jnp.asarray(pair_b),
        row_cell=jnp.asarray(np.stack([position[c] for c in row_cells], axis=1)),
        XtX=jnp.asarray(Xw.T @ Xw), Xty=jnp.asarray(Xw.T @ yw), yty=jnp.asarray(yw @ yw),
        n=jnp.asarray(float(np.sum(w > 0))),
        half_log_w=jnp.asarray(0.5 * np.sum(np.log(w[w > 0]))), parents=parents,
    )


def cell_pairs(cell_level: np.ndarray, m1: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs a ≤ b of cells (sorted by their first-factor level) that share a first-factor
    level: S is symmetric, so half of them."""
    counts = np.bincount(cell_level, minlength=m1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    index = np.arange(cell_level.size)
    per_cell = starts[cell_level] + counts[cell_level] - index  # cells from a to its level's last
    pair_a = np.repeat(index, per_cell)
    pair_b = pair_a + np.arange(pair_a.size) - np.repeat(np.cumsum(per_cell) - per_cell, per_cell)
    return pair_a, pair_b


def _rest_lam_t(lams, V, terms: Terms):
    """Λ₂ᵀ V for V with the r effects on its first axis (Λ₂ block diagonal, one Λ_k per level)."""
    parts = []
    for lam, off, q, m in zip(lams, terms.offsets(), terms.q[1:], terms.m[1:]):
        block = V[off:off + q * m].reshape((m, q) + V.shape[1:])
        parts.append(jnp.einsum("ji,lj...->li...", lam, block).reshape((m * q,) + V.shape[1:]))
    return jnp.concatenate(parts, axis=0)


def _padded_rest(lams, terms: Terms):
    """The other terms' Λ_k, zero-padded to q̄ × q̄ and stacked: (K−1, q̄, q̄)."""
    qbar = terms.q_rest
    return jnp.stack([jnp.zeros((qbar, qbar), lam.dtype).at[:lam.shape[0], :lam.shape[1]].set(lam)
                      for lam in lams])


class Reduced(NamedTuple):
    XtRX: jnp.ndarray
    XtRy: jnp.ndarray
    ytRy: jnp.ndarray
    logdet_A: jnp.ndarray
    C1: jnp.ndarray  # (m₁, q₁, q₁)
    Cc: jnp.ndarray  # (c, q₁, q̄)
    C2: jnp.ndarray  # (r, r)
    P1: jnp.ndarray  # (m₁, q₁, p)
    c1: jnp.ndarray  # (m₁, q₁)
    P2: jnp.ndarray  # (r, p)
    c2: jnp.ndarray  # (r,)


class Factor(NamedTuple):
    """The blocked Cholesky factor of A = I + ΛᵀZᵀWZΛ."""

    C1: jnp.ndarray  # (m₁, q₁, q₁) per first-factor level
    Cc: jnp.ndarray  # (c, q₁, q̄) C₁⁻¹B per cell
    C2: jnp.ndarray  # (r, r) of the Schur complement S, or nested a _nested_chain.ChainFactor

    @property
    def logdet(self):
        return jnp.sum(sm.logdet_from_cholesky(self.C1)) + _logdet_c2(self.C2)


def _logdet_c2(C2):
    """log|S| from its factor: dense (r, r), or a nested design's chain factor."""
    return C2.logdet if isinstance(C2, chain.ChainFactor) else 2.0 * jnp.sum(jnp.log(jnp.diagonal(C2)))


def _chol_c2(S):
    """The factor of S: dense (r, r), or a nested design's chain factor."""
    return chain.cholesky(S) if isinstance(S, chain.Chain) else jnp.linalg.cholesky(S)


def _solve_c2(C2, t, trans: bool = False):
    """C₂⁻¹t (or C₂⁻ᵀt) for t of shape (r,) or (r, p), C₂ dense or a chain factor."""
    if isinstance(C2, chain.ChainFactor):
        return chain.solve(C2, t, trans)
    return solve_triangular(C2, t, lower=True, trans="T" if trans else "N")


def first_rows(Cc, stats: CrossedStats, terms: Terms):
    """A nested design's C_c by first-factor level, (m₁, q₁, Q₂) against the effects of the
    level's ancestors in term order, and each level's parent in term 2 (its cells are in level
    order, term 2's first; cells past the last level's are padding: devices=, _crossed_shard)."""
    m1, k_rest = terms.m[0], len(terms.q) - 1
    cells = Cc[:m1 * k_rest].reshape((m1, k_rest) + Cc.shape[1:])
    F1 = jnp.concatenate([cells[:, k, :, :terms.q[k + 1]] for k in range(k_rest)], axis=2)
    return F1, stats.cell_cols[:m1 * k_rest:k_rest, 0] // terms.q[1]


def _chain_rest(rest, blocks, parents, terms: Terms) -> chain.Chain:
    """I + Λ₂ᵀZ₂ᵀZ₂Λ₂ of a nested design in the chain's pattern, from the rows of Z₂ᵀZ₂."""
    rows = []
    for k, block in enumerate(blocks):
        q = terms.q[k + 1]
        right = jax.scipy.linalg.block_diag(*rest[k:])
        rows.append(jnp.eye(q, block.shape[2], dtype=block.dtype)[None]
                    + jnp.einsum("ji,mjk,kl->mil", rest[k], block, right))
    return chain.Chain(tuple(rows), parents)


def schur(lams, stats: CrossedStats, terms: Terms):
    """(C₁, C_c, S): the first blocks of A's factorisation and the Schur complement S (dense,
    or a nested design's :class:`._nested_chain.Chain`), from the Gram pieces of ``stats`` (Z₁ᵀZ₁
    by level, Z₁ᵀZ₂ by cell, Z₂ᵀZ₂; weighted ones in a Laplace fit) at the factors ``lams``."""
    lam1, rest = lams[0], lams[1:]
    q1, r = terms.q[0], terms.rest
    dtype = lam1.dtype
    C1 = sm.cholesky(jnp.eye(q1, dtype=dtype)[None] + jnp.einsum("ji,mjk,kl->mil", lam1, stats.Z1tZ1, lam1))
    padded = _padded_rest(rest, terms)
    Cc = sm.solve_lower(C1[stats.cell_level],
                        jnp.einsum("ji,cjk,ckl->cil", lam1, stats.Z1tZ2, padded[stats.cell_term]))
    if terms.nested:  # each first-factor level meets one level of every other term
        F1, parent = first_rows(Cc, stats, terms)
        S = chain.subtract_below(_chain_rest(rest, stats.Z2tZ2, stats.parents, terms),
                                 jnp.einsum("mia,mib->mab", F1, F1), parent, terms.m[1])
        return C1, Cc, S
    # S = I + Λ₂ᵀZ₂ᵀZ₂Λ₂ − C_cᵀC_c, the last over pairs of cells of one first-factor level
    G = _rest_lam_t(rest, _rest_lam_t(rest, stats.Z2tZ2, terms).T, terms)
    # pairs a ≤ b: the sum M over them gives C_cᵀC_c = M + Mᵀ, a cell's own (symmetric) block halved
    pa, pb = stats.pair_a, stats.pair_b
    half = jnp.where(pa == pb, 0.5, 1.0).astype(dtype)
    # gathered one scalar column at a time: on XLA:CPU several times faster than rows of
    # (q₁, q̄) (docs/performance.md); pair_a is sorted
    at_a = lambda col: col.at[pa].get(mode="promise_in_bounds", indices_are_sorted=True)
    at_b = lambda col: col.at[pb].get(mode="promise_in_bounds")
    qbar = Cc.shape[2]
    ca = [[at_a(Cc[:, i, e]) for e in range(qbar)] for i in range(q1)]
    cb = [[at_b(Cc[:, i, e]) for e in range(qbar)] for i in range(q1)]
    cols_a = [at_a(stats.cell_cols[:, e]) * (r + 1) for e in range(qbar)]
    cols_b = [at_b(stats.cell_cols[:, e]) for e in range(qbar)]
    # one flat index per entry, not a (row, column) pair: faster on XLA:CPU (docs/performance.md)
    values = jnp.concatenate([half * sum(ca[i][e] * cb[i][f] for i in range(q1))
                              for e in range(qbar) for f in range(qbar)])
    target = jnp.concatenate([cols_a[e] + cols_b[f] for e in range(qbar) for f in range(qbar)])
    pairs = jnp.zeros(((r + 1) * (r + 1),), dtype).at[target].add(values)
    pairs = pairs.reshape(r + 1, r + 1)[:r, :r]  # padding: row/column r
    return C1, Cc, jnp.eye(r, dtype=dtype) + G - (pairs + pairs.T)


def factor(lams, stats: CrossedStats, terms: Terms) -> Factor:
    """The blocked factorisation of A at the relative factors ``lams`` (see :func:`schur`)."""
    C1, Cc, S = schur(lams, stats, terms)
    return Factor(C1, Cc, _chol_c2(S))


def logdet(lams, stats: CrossedStats, terms: Terms):
    """log|A|, differentiable: a dense S through :func:`._spd.logdet_and_forms`."""
    C1, _, S = schur(lams, stats, terms)
    nested = isinstance(S, chain.Chain)
    rest = chain.cholesky(S).logdet if nested else logdet_and_forms(S, jnp.zeros((S.shape[0], 0), S.dtype))[0]
    return jnp.sum(sm.logdet_from_cholesky(C1)) + rest


def solve(f: Factor, stats: CrossedStats, g1, g2):
    """x with A x = g, g = (g₁ (m₁, q₁), g₂ (r,)): forward through C₁, C_c, C₂, then back."""
    r = g2.shape[0]
    y1 = sm.solve_lower(f.C1, g1)
    t = jnp.concatenate([g2, jnp.zeros((1,), g2.dtype)])
    t = t.at[stats.cell_cols].add(-jnp.einsum("cia,ci->ca", f.Cc, y1[stats.cell_level]))[:r]
    x2 = _solve_c2(f.C2, _solve_c2(f.C2, t), trans=True)
    x2_pad = jnp.concatenate([x2, jnp.zeros((1,), x2.dtype)])
    y1 = y1.at[stats.cell_level].add(-jnp.einsum("cia,ca->ci", f.Cc, x2_pad[stats.cell_cols]))
    return sm.solve_lower_transpose(f.C1, y1), x2


def rest_lam(lams, u2, terms: Terms):
    """Λ₂ u₂: the other terms' effects b₂ from their spherical u₂ (r,)."""
    parts = []
    for lam, off, q, m in zip(lams, terms.offsets(), terms.q[1:], terms.m[1:]):
        parts.append((u2[off:off + q * m].reshape(m, q) @ lam.T).reshape(m * q))
    return jnp.concatenate(parts)


def _eliminated(lams, stats: CrossedStats, terms: Terms):
    """(C₁, C_c, S, P₁, c₁, T): X and y eliminated through the first blocks, and what is
    left of them for S, T = Λ₂ᵀZ₂ᵀ[X y] − C_cᵀ[P₁ c₁] (r, p + 1)."""
    lam1, rest = lams[0], lams[1:]
    r = terms.rest
    C1, Cc, S = schur(lams, stats, terms)
    P1 = sm.solve_lower(C1, jnp.einsum("ji,mjp->mip", lam1, stats.Z1tX))
    c1 = sm.solve_lower(C1, stats.Z1ty @ lam1)
    rhs1 = jnp.concatenate([P1, c1[..., None]], axis=-1)
    per_cell = jnp.einsum("cia,cip->cap", Cc, rhs1[stats.cell_level])
    T = _rest_lam_t(rest, jnp.concatenate([stats.Z2tX, stats.Z2ty[:, None]], axis=1), terms)
    T = jnp.concatenate([T, jnp.zeros((1, T.shape[1]), T.dtype)]).at[stats.cell_cols].add(-per_cell)[:r]
    return C1, Cc, S, P1, c1, T


def _reduced(stats: CrossedStats, P1, c1, Q, logdet_A):
    """X and y's Gram pieces after A is eliminated, with Q = TᵀS⁻¹T."""
    p = P1.shape[-1]
    return (stats.XtX - jnp.einsum("mia,mib->ab", P1, P1) - Q[:p, :p],
            stats.Xty - jnp.einsum("mia,mi->a", P1, c1) - Q[:p, p],
            stats.yty - jnp.sum(c1 * c1) - Q[p, p], logdet_A)


def reduce(lams, stats: CrossedStats, terms: Terms) -> Reduced:
    """The blocked Cholesky factorisation of A and the elimination of X and y, at the
    relative factors ``lams`` (one lower-triangular Λ_k per term, the first term first)."""
    C1, Cc, S, P1, c1, T = _eliminated(lams, stats, terms)
    f = Factor(C1, Cc, _chol_c2(S))
    PC = _solve_c2(f.C2, T)
    XtRX, XtRy, ytRy, logdet_A = _reduced(stats, P1, c1, PC.T @ PC, f.logdet)
    return Reduced(XtRX=XtRX, XtRy=XtRy, ytRy=ytRy, logdet_A=logdet_A, C1=C1, Cc=Cc, C2=f.C2, P1=P1, c1=c1,
                   P2=PC[:, :-1], c2=PC[:, -1])


def _gls(XtRX, XtRy, ytRy):
    chol_X = jnp.linalg.cholesky(XtRX)
    beta = cho_solve((chol_X, True), XtRy)
    pwrss = ytRy - jnp.sum(beta * XtRy)
    return beta, pwrss, 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol_X))), chol_X


def profiled_loglik(lams, stats: CrossedStats, terms: Terms, reml: bool):
    """Log-likelihood (REML or ML) maximised over β and σ at the relative factors ``lams``.
    A dense S enters through :func:`._spd.logdet_and_forms` (its derivative from S⁻¹)."""
    if terms.nested:
        red = reduce(lams, stats, terms)
        XtRX, XtRy, ytRy, logdet_A = red.XtRX, red.XtRy, red.ytRy, red.logdet_A
    else:
        C1, _, S, P1, c1, T = _eliminated(lams, stats, terms)
        logdet_S, Q = logdet_and_forms(S, T)
        XtRX, XtRy, ytRy, logdet_A = _reduced(stats, P1, c1, Q, jnp.sum(sm.logdet_from_cholesky(C1)) + logdet_S)
    beta, pwrss, logdet_X, _ = _gls(XtRX, XtRy, ytRy)
    dof = stats.n - beta.shape[0] if reml else stats.n
    value = logdet_A + dof * (1.0 + _LOG_2PI + jnp.log(pwrss / dof))
    if reml:
        value = value + logdet_X
    return -0.5 * value + stats.half_log_w
