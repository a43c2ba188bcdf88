"""Batched linear algebra for many small (q×q, q ≲ 10) symmetric positive-definite matrices.

The loops over q are unrolled at trace time, so every operation is elementwise over the
batch of groups. This is faster than one LAPACK call per matrix for q = 1..3, and it
avoids jaxlib's batched potrf/trsm kernels, which deadlocked XLA:CPU's thread pool once
the batch reached ~50k groups (docs/performance.md).
All functions take (..., q, q) matrices and work for any leading batch shape.
"""
from __future__ import annotations

import jax.numpy as jnp



def cholesky(A):
    """Lower Cholesky factor of each matrix in A (..., q, q)."""
    q = A.shape[-1]
    L = [[None] * q for _ in range(q)]
    for j in range(q):
        s = A[..., j, j]
        for k in range(j):
            s = s - L[j][k] * L[j][k]
        d = jnp.sqrt(s)
        L[j][j] = d
        for i in range(j + 1, q):
            s = A[..., i, j]
            for k in range(j):
                s = s - L[i][k] * L[j][k]
            L[i][j] = s / d
    zero = jnp.zeros_like(A[..., 0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(q)], axis=-1)
                      for i in range(q)], axis=-2)


def solve_lower(L, B):
    """Solve L X = B for X; B is (..., q) or (..., q, k)."""
    vec = B.ndim == L.ndim - 1
    if vec:
        B = B[..., None]
    q = L.shape[-1]
    rows = []
    for i in range(q):
        r = B[..., i, :]
        for k in range(i):
            r = r - L[..., i, k, None] * rows[k]
        rows.append(r / L[..., i, i, None])
    X = jnp.stack(rows, axis=-2)
    return X[..., 0] if vec else X


def solve_lower_transpose(L, B):
    """Solve Lᵀ X = B for X; B is (..., q) or (..., q, k)."""
    vec = B.ndim == L.ndim - 1
    if vec:
        B = B[..., None]
    q = L.shape[-1]
    rows = [None] * q
    for i in reversed(range(q)):
        r = B[..., i, :]
        for k in range(i + 1, q):
            r = r - L[..., k, i, None] * rows[k]
        rows[i] = r / L[..., i, i, None]
    X = jnp.stack(rows, axis=-2)
    return X[..., 0] if vec else X


def cho_solve(L, B):
    """Solve (L Lᵀ) X = B."""
    return solve_lower_transpose(L, solve_lower(L, B))


def cho_inverse(L):
    """(L Lᵀ)⁻¹ for each factor."""
    q = L.shape[-1]
    eye = jnp.broadcast_to(jnp.eye(q, dtype=L.dtype), L.shape)
    return cho_solve(L, eye)


def logdet_from_cholesky(L):
    """log|L Lᵀ| for each factor."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)


# Products are written out up to this inner size (q, and the p of most models); wider ones
# (hundreds of fixed-effect columns) are dots, so the program's size does not grow with p.
UNROLL_MAX = 16


def matmul(A, B):
    """A @ B for (..., n, k) A and (..., k, m) B (leading axes broadcast) as k elementwise
    products added up, unrolled, for the small k of these models (q, or the p of X).

    Written as a dot, each product is a kernel of its own on a GPU, a cuBLAS call whose
    algorithm XLA:GPU would autotune while it compiles the fit (jaxmm turns the autotuner off:
    _jit.GPU_COMPILER_OPTIONS); as products, XLA fuses them into the loops around them.
    Used for the row and group products of every objective evaluation (X β, Z L, the
    gradient's per-group terms).
    """
    k = A.shape[-1]
    if B.shape[-2] != k:
        raise ValueError(f"matmul: {A.shape} @ {B.shape}")
    rank = max(A.ndim, B.ndim)  # leading axes of equal rank (jaxmm's tests forbid rank promotion)
    A, B = (M.reshape((1,) * (rank - M.ndim) + M.shape) for M in (A, B))
    if k > UNROLL_MAX:
        return jnp.matmul(A, B)
    return sum(A[..., :, j, None] * B[..., None, j, :] for j in range(k))


def matvec(A, x):
    """A @ x for (..., n, k) A and (..., k) x, as :func:`matmul`."""
    return matmul(A, x[..., None])[..., 0]


def cross(A, B, as_sums: bool = False):
    """Aᵀ B summed over A's leading axes (the rows, or the groups and their q entries): the
    long contractions, not small ones. B has A's leading axes and one more, or none (Aᵀ b).

    ``as_sums`` (accelerators: ``_jit.Kernels.products_as_sums``): a sum of elementwise
    products, which XLA fuses as a reduction, rather than a dot.
    """
    lead = tuple(range(A.ndim - 1))
    wide = A.shape[-1] * (1 if B.ndim == A.ndim - 1 else B.shape[-1]) > UNROLL_MAX * UNROLL_MAX
    if not as_sums or wide:  # a wide sum would hold rows × p × p products
        return jnp.tensordot(A, B, axes=(lead, lead))
    if B.ndim == A.ndim - 1:
        return jnp.sum(A * B[..., None], axis=lead)
    return jnp.sum(A[..., :, None] * B[..., None, :], axis=lead)


# From this many columns on, :func:`gram` computes the blocks on and above the diagonal of
# a 4 × 4 partition of the columns and mirrors the rest: 10 of 16 products (docs/performance.md).
GRAM_BLOCKED_MIN = 512
_GRAM_PARTS = 4


def gram(A, weights, as_sums: bool = False):
    """Aᵀ diag(w) A (p, p) for (N, p) A and (N,) weights (symmetric by construction from
    GRAM_BLOCKED_MIN columns on); ``as_sums`` as in :func:`cross`."""
    B = A * weights[:, None]
    p = A.shape[-1]
    if p < GRAM_BLOCKED_MIN:
        return cross(A, B, as_sums)
    edges = [round(i * p / _GRAM_PARTS) for i in range(_GRAM_PARTS + 1)]
    part = lambda M, i: M[:, edges[i]:edges[i + 1]]
    upper = {(i, j): jnp.tensordot(part(A, i), part(B, j), axes=(0, 0))
             for i in range(_GRAM_PARTS) for j in range(i, _GRAM_PARTS)}
    upper.update({(i, i): 0.5 * (upper[(i, i)] + upper[(i, i)].T) for i in range(_GRAM_PARTS)})
    return jnp.block([[upper[(i, j)] if j >= i else upper[(j, i)].T for j in range(_GRAM_PARTS)]
                      for i in range(_GRAM_PARTS)])
