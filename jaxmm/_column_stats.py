"""Statistics of a fixed-effect matrix's columns: which are aliased, and their scales."""
from __future__ import annotations

import numpy as np


def aliased_columns(X, rtol: float = 1e-7, *, gram: np.ndarray | None = None) -> list[int]:
    """Columns that are linear combinations of earlier ones (dropped in order, as lme4 does).

    Column j is aliased when its residual on the columns before it is below rtol·‖x_j‖.
    That residual norm is |R_jj| of a QR of X (aliased columns add nothing to the span, so
    "before it" and "kept before it" agree). R comes from the Cholesky factor of the p×p
    Gram matrix XᵀX, one pass with no N×p copy, faster than a QR of X (docs/performance.md).
    The Gram matrix resolves R_jj²/‖x_j‖² only to about 1e-15, so where that ratio falls
    between 1e-16 and 1e-12 (the threshold is rtol² = 1e-14) the QR decides instead.

    ``gram``: XᵀX where the caller has it; ``X`` may then be a function that returns the
    matrix, called only where the QR decides, or None where no process holds all the rows
    (the Gram matrix then decides alone).
    """
    if gram is None:
        gram = X.T @ X
    p = gram.shape[0]
    if p == 0:
        return []
    norms2 = np.diag(gram).copy()
    R = np.zeros((p, p))
    ratios = np.zeros(p)
    for j in range(p):
        r = gram[:, j] - R[:j].T @ R[:j, j] if j else gram[:, j].copy()
        rjj2 = r[j]
        ratios[j] = rjj2 / norms2[j] if norms2[j] > 0 else 0.0
        if rjj2 > 0 and norms2[j] > 0:
            R[j, j:] = r[j:] / np.sqrt(rjj2)
        # an aliased column contributes no row of R: later columns see the same span
    if X is not None and np.any((ratios > 1e-16) & (ratios < 1e-12)):
        X = X() if callable(X) else X
        if X.shape[0] < p:  # rows of zeros change no residual; R then has a diagonal entry per column
            X = np.vstack([X, np.zeros((p - X.shape[0], p))])
        norms = np.linalg.norm(X, axis=0)
        r = np.abs(np.diag(np.linalg.qr(X, mode="r")))
        return [j for j in range(p) if r[j] <= rtol * max(norms[j], 1e-300)]
    return [j for j in range(p) if ratios[j] <= rtol * rtol]


def column_scales(X: np.ndarray, rows: int = 1 << 18) -> tuple:
    """The SD of each column (1 for a constant one), in blocks of rows: X.std(axis=0) makes
    an N×p temporary whose page faults are slow at large N (docs/performance.md)."""
    if hasattr(X, "scales"):  # a _plain_matrix.PlainMatrix, column by column without the matrix
        return X.scales(rows)
    n = X.shape[0]
    if n == 0:
        return tuple(1.0 for _ in range(X.shape[1]))
    mean = X.sum(axis=0) / n
    ss = np.zeros(X.shape[1])
    for start in range(0, n, rows):
        block = X[start:start + rows] - mean
        ss += np.einsum("ij,ij->j", block, block)
    return tuple(float(s) if s > 0 else 1.0 for s in np.sqrt(ss / n))
