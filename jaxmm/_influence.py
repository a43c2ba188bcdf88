"""Leverage and Cook's distance of a linear mixed model's rows (lme4's ``hatvalues`` and
``cooks.distance``; broom.mixed's ``.hat`` and ``.cooksd``).

With u = Λ⁻¹b spherical and W the prior weights, the fitted values are H y for the hat matrix
H = W^½ [ZΛ X] M⁻¹ [ZΛ X]ᵀ W^½ of the penalised least-squares system
M = [[ΛᵀZᵀWZΛ + I, ΛᵀZᵀWX], [XᵀWZΛ, XᵀWX]]. Factored blockwise, M = LLᵀ with L_g per group
(q×q), R_g = L_g⁻¹ΛᵀZ_gᵀWX_g and L_X the factor of XᵀWX − Σ R_gᵀR_g, row i of group g has
hᵢ = ‖aᵢ‖² + ‖L_X⁻¹(√wᵢ xᵢ − R_gᵀaᵢ)‖², aᵢ = L_g⁻¹Λᵀ√wᵢ zᵢ. Cook's distance is then lme4's
(rᵢ / (1 − hᵢ))² hᵢ / (σ² p), rᵢ the Pearson residual and p the rank of X.
"""
from __future__ import annotations

import numpy as np

from ._sharding import to_host


def hat_values(res) -> np.ndarray:
    """The diagonal of H for the fitted rows, in input order (a one-term gaussian fit)."""
    design, slot = res.design, res.layout.row_slot
    X, Z, w, group = (to_host(a)[slot] for a in (design.X, design.Z, design.weights, design.group))
    m = design.n_groups
    lam = np.asarray(res.params.chol, float) / float(res.sigma)
    sw = np.sqrt(np.asarray(w, float))
    Zt = (np.asarray(Z, float) @ lam) * sw[:, None]   # rows of W^½ZΛ
    Xw = np.asarray(X, float) * sw[:, None]
    q = Zt.shape[1]
    M = np.broadcast_to(np.eye(q), (m, q, q)).copy()
    np.add.at(M, group, Zt[:, :, None] * Zt[:, None, :])
    L = np.linalg.cholesky(M)
    a = np.linalg.solve(L[group], Zt[:, :, None])[:, :, 0]  # L_g⁻¹ Λᵀ√w z, row by row
    ZX = np.zeros((m, q, Xw.shape[1]))
    np.add.at(ZX, group, Zt[:, :, None] * Xw[:, None, :])
    R = np.linalg.solve(L, ZX)
    LX = np.linalg.cholesky(Xw.T @ Xw - np.einsum("gqa,gqb->ab", R, R))
    c = np.linalg.solve(LX, (Xw - np.einsum("nqp,nq->np", R[group], a)).T).T
    return np.sum(a * a, axis=1) + np.sum(c * c, axis=1)


def cooks_distance(res, hat: np.ndarray, pearson: np.ndarray) -> np.ndarray:
    """lme4's Cook's distance from the hat values and the Pearson residuals."""
    p = len(res.fixef)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (pearson / (1.0 - hat)) ** 2 * hat / (float(res.sigma) ** 2 * p)
    return np.where(np.isinf(out), np.nan, out)
