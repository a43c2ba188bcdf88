"""The result of a fit with several random-effect terms: immutable, with lme4's views of it
(``VarCorr``, ``ranef`` and ``condVar`` per grouping factor) and a summary in lme4's layout.

Terms on one factor, as ``(1 | g) + (0 + x | g)``, are one factor in ``ranef``, ``cond_var``
and ``D`` (their effects side by side; ``D``'s cross block is zero, as the model has it,
while ``cond_var`` keeps the conditional covariances between them), and two rows of
``varcorr()`` under the same group.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ._criteria import Criteria
from ._optimize import Status


@dataclasses.dataclass(frozen=True)
class FactorTerm:
    """One term: its factor's label, effect names, level labels, the structure of its
    covariance (q, or the block sizes of ``||``), and its rows' level codes and effects."""

    label: str
    names: tuple
    levels: tuple
    structure: object
    codes: np.ndarray
    Z: np.ndarray


@dataclasses.dataclass(frozen=True)
class CrossedResult(Criteria):
    formula: str
    method: str
    fixef: pd.Series
    vcov: pd.DataFrame
    sigma: float | None  # the residual SD (gaussian), gamma's CV, NB's size; None without a dispersion
    loglik: float
    n_obs: int
    n_dropped: int
    terms: tuple       # FactorTerm, the factor with the most levels first
    chols: tuple       # Cholesky factor of each term's D_k
    ranefs: tuple      # (m_k, q_k) per term
    cond_vars: tuple   # (m_k, q_k, q_k) per term
    shared: tuple      # pairs of terms on one factor
    cross_vars: tuple  # (m, q_a, q_b) per pair in ``shared``
    status: Status
    n_iter: int
    n_eval: int
    max_abs_grad: float
    npar: int          # lme4's df of logLik
    family: str = "gaussian"
    link: str = "identity"

    @property
    def converged(self) -> bool:
        return self.status == Status.CONVERGED

    @property
    def message(self) -> str:
        return self.status.message

    def _factors(self) -> dict:
        """{factor label: indices of its terms}, in the terms' order."""
        out: dict = {}
        for k, term in enumerate(self.terms):
            out.setdefault(term.label, []).append(k)
        return out

    @property
    def n_levels(self) -> dict:
        return {label: len(self.terms[ks[0]].levels) for label, ks in self._factors().items()}

    @property
    def D(self) -> dict:
        """{factor: its effects' prior covariance}; terms on one factor are independent."""
        out = {}
        for label, ks in self._factors().items():
            blocks = [c @ c.T for c in (self.chols[k] for k in ks)]
            size = sum(b.shape[0] for b in blocks)
            D, at = np.zeros((size, size)), 0
            for b in blocks:
                D[at:at + b.shape[0], at:at + b.shape[0]] = b
                at += b.shape[0]
            out[label] = D
        return out

    @property
    def ranef(self) -> dict:
        """{factor: DataFrame of its BLUPs, one row per level, one column per effect}."""
        return {label: pd.DataFrame(np.hstack([self.ranefs[k] for k in ks]), index=list(self.terms[ks[0]].levels),
                                    columns=[n for k in ks for n in self.terms[k].names])
                for label, ks in self._factors().items()}

    @property
    def cond_var(self) -> dict:
        """{factor: (levels, q, q) conditional covariances of its effects, rows as in ``ranef``}."""
        cross = dict(zip(self.shared, self.cross_vars))
        out = {}
        for label, ks in self._factors().items():
            sizes = [self.ranefs[k].shape[1] for k in ks]
            starts = np.concatenate([[0], np.cumsum(sizes)])
            V = np.zeros((self.ranefs[ks[0]].shape[0], starts[-1], starts[-1]))
            for i, a in enumerate(ks):
                V[:, starts[i]:starts[i + 1], starts[i]:starts[i + 1]] = self.cond_vars[a]
                for j, b in enumerate(ks[i + 1:], start=i + 1):
                    block = cross[(a, b)]
                    V[:, starts[i]:starts[i + 1], starts[j]:starts[j + 1]] = block
                    V[:, starts[j]:starts[j + 1], starts[i]:starts[i + 1]] = np.swapaxes(block, 1, 2)
            out[label] = V
        return out

    def varcorr(self) -> pd.DataFrame:
        """lme4's VarCorr: one row per term and effect (group, name, variance, std_dev, and
        the correlations with the effects above it in its term), then Residual."""
        rows = []
        for term, chol in zip(self.terms, self.chols):
            D = chol @ chol.T
            sd = np.sqrt(np.diag(D))
            for k, name in enumerate(term.names):
                corr = tuple(float(D[k, j] / (sd[k] * sd[j])) if sd[k] * sd[j] > 0 else math.nan
                             for j in range(k) if _same_block(term.structure, k, j))
                rows.append({"group": term.label, "name": name, "variance": float(D[k, k]), "std_dev": float(sd[k]),
                             "corr": corr})
        if self.family == "gaussian":
            rows.append({"group": "Residual", "name": "", "variance": self.sigma ** 2, "std_dev": self.sigma,
                         "corr": ()})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        from ._crossed_render import summary_text

        return summary_text(self)

    def __repr__(self) -> str:
        return self.summary()


def _same_block(structure, i: int, j: int) -> bool:
    if isinstance(structure, (int, np.integer)):
        return True
    block_of = np.repeat(np.arange(len(structure)), structure)
    return block_of[i] == block_of[j]
