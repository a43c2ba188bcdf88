"""The remainder of a nested chain of random-effect terms, kept block sparse.

When every term lies inside the next (class in school in district; two terms on one factor,
``(1 | g) + (0 + x | g)``), a level of one term meets exactly one level of each later term,
its ancestors. After the first term is eliminated, the Schur complement S over the other terms'
effects then has nonzero blocks only between a level and its ancestors, and so has its Cholesky
factor: eliminating a level adds only into the blocks among its ancestors, which are ancestors
of one another (no fill). S is stored, factored, solved and selectively inverted by those blocks
alone, in memory and work linear in the levels, where a dense S of 100k schools would take 80 GB.

Layout: per term k of the chain (the innermost first) the rows of its levels, (m_k, q_k, Q_k)
with Q_k = q_k + q_{k+1} + …: the diagonal block, then the block to each ancestor in term order;
and each level's parent in the next term, (m_k,) for all but the last term.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import _smallmat as sm


class Chain(NamedTuple):
    """A symmetric matrix in the chain's pattern (module doc)."""

    rows: tuple     # per term: (m_k, q_k, Q_k)
    parents: tuple  # per term but the last: (m_k,) the level of term k + 1 holding each level


class ChainFactor(NamedTuple):
    """S = LLᵀ in the same pattern: per term the diagonal factors C_k (m_k, q_k, q_k) and
    F_k = C_k⁻¹B_k (m_k, q_k, Q_k − q_k), the blocks of L below the diagonal being F_kᵀ."""

    C: tuple
    F: tuple
    parents: tuple

    @property
    def logdet(self):
        return sum(jnp.sum(sm.logdet_from_cholesky(C)) for C in self.C)


def ancestors(parents, k: int) -> list:
    """The levels, in each later term, that hold each level of term k: a list of (m_k,)."""
    out, at = [], None
    for p in parents[k:]:
        at = p if at is None else p[at]
        out.append(at)
    return out


def _propagate(pending, parents, k: int, m_next: int, q: int):
    """A sum of blocks over (term k and its ancestors)², moved to the parents: its part over
    the ancestors, summed per parent level."""
    return jax.ops.segment_sum(pending[:, q:, q:], parents[k], m_next)


def subtract_below(S: Chain, blocks, parent, m_first: int) -> Chain:
    """S less the sum of ``blocks`` (n, Q, Q), each over the effects of one level of the
    chain's first term (given by ``parent``, (n,)) and its ancestors: C_cᵀC_c of the
    eliminated first term of the model, one block per first-factor level."""
    rows, pending = [], jax.ops.segment_sum(blocks, parent, m_first)
    for k, row in enumerate(S.rows):
        q = row.shape[1]
        rows.append(row - pending[:, :q, :])
        if k + 1 < len(S.rows):
            pending = _propagate(pending, S.parents, k, S.rows[k + 1].shape[0], q)
    return Chain(tuple(rows), S.parents)


def cholesky(S: Chain) -> ChainFactor:
    """The block Cholesky factor, the innermost term first: a level's F_kᵀF_k is subtracted
    from its parent's blocks (and, through it, from the ancestors')."""
    Cs, Fs, pending = [], [], None
    for k, row in enumerate(S.rows):
        q = row.shape[1]
        if pending is not None:
            row = row - pending[:, :q, :]
        C = sm.cholesky(row[:, :, :q])
        F = sm.solve_lower(C, row[:, :, q:])
        Cs.append(C)
        Fs.append(F)
        if k + 1 < len(S.rows):
            own = jnp.einsum("mia,mib->mab", F, F)
            pending = jax.ops.segment_sum(own, S.parents[k], S.rows[k + 1].shape[0]) + (
                0.0 if pending is None else _propagate(pending, S.parents, k, S.rows[k + 1].shape[0], q))
    return ChainFactor(tuple(Cs), tuple(Fs), S.parents)


def _split(f: ChainFactor, t) -> list:
    out, at = [], 0
    for C in f.C:
        m, q = C.shape[:2]
        out.append(t[at:at + m * q].reshape((m, q) + t.shape[1:]))
        at += m * q
    return out


def solve(f: ChainFactor, t, trans: bool = False):
    """L⁻¹t (or L⁻ᵀt) for t of shape (r,) or (r, p), r the chain's effects level-major per term."""
    blocks = _split(f, t)
    widths = [C.shape[1] for C in f.C]
    if not trans:  # forward: a level's solution is subtracted from its ancestors' right sides
        for k in range(len(blocks)):
            blocks[k] = sm.solve_lower(f.C[k], blocks[k])
            at = 0
            for j, anc in enumerate(ancestors(f.parents, k), start=k + 1):
                part = jnp.einsum("mia,mi...->ma...", f.F[k][:, :, at:at + widths[j]], blocks[k])
                blocks[j] = blocks[j] - jax.ops.segment_sum(part, anc, blocks[j].shape[0])
                at += widths[j]
    else:  # back: a level's right side less F_k times its ancestors' solutions
        for k in reversed(range(len(blocks))):
            rhs, at = blocks[k], 0
            for j, anc in enumerate(ancestors(f.parents, k), start=k + 1):
                rhs = rhs - jnp.einsum("mia,ma...->mi...", f.F[k][:, :, at:at + widths[j]], blocks[j][anc])
                at += widths[j]
            blocks[k] = sm.solve_lower_transpose(f.C[k], rhs)
    return jnp.concatenate([b.reshape((-1,) + t.shape[1:]) for b in blocks], axis=0)


def extend(C, F, above):
    """The blocks of the inverse over a level and its ancestors, (m, q + Q, q + Q), from its
    factor C (m, q, q), its F = C⁻¹B (m, q, Q) and the inverse's blocks over its ancestors
    ``above`` (m, Q, Q) (Takahashi's recurrence): Σ_aj = −Σ_aa Fᵀ C⁻¹ and
    Σ_jj = C⁻ᵀ(I + F Σ_aa Fᵀ)C⁻¹."""
    m, q = C.shape[:2]
    C_inv = sm.solve_lower(C, jnp.broadcast_to(jnp.eye(q, dtype=C.dtype), C.shape))
    own = jnp.swapaxes(C_inv, 1, 2) @ (jnp.eye(q, dtype=C.dtype)[None] + F @ above @ jnp.swapaxes(F, 1, 2)) @ C_inv
    down = -above @ jnp.swapaxes(F, 1, 2) @ C_inv  # (m, Q, q)
    return jnp.concatenate([jnp.concatenate([own, jnp.swapaxes(down, 1, 2)], axis=2),
                            jnp.concatenate([down, above], axis=2)], axis=1)


def inverse_blocks(f: ChainFactor) -> list:
    """Per term, the blocks of S⁻¹ over each level and its ancestors, (m_k, Q_k, Q_k): the
    outermost term's are its blocks' inverses, each inner term's follow by :func:`extend`."""
    out = [None] * len(f.C)
    for k in reversed(range(len(f.C))):
        if k == len(f.C) - 1:
            out[k] = sm.cho_inverse(f.C[k])
        else:
            out[k] = extend(f.C[k], f.F[k], out[k + 1][f.parents[k]])
    return out
