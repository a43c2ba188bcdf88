"""Per-group estimates without pooling, to set against the BLUPs.

A group's unpooled estimate maximises its own likelihood in b_i with β fixed at β̂: what a
separate regression per group would give. It is computed as the conditional mode under a
prior 10⁴ times wider than D̂ (sd ×100), which leaves well-determined groups unchanged and
keeps separated groups (a Bernoulli group of all zeros) finite instead of at −∞.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._arrays import conditional_modes
from ._design import design_from_formula
from ._formula import parse_formula
from ._params import Params

WIDEN = 100.0  # prior sd multiplier for the unpooled estimates


def unpooled_effects(res, data) -> np.ndarray:
    """(groups, q) per-group estimates of the random effects without shrinkage, in the
    order of ``res.group_labels``. ``data`` is the table the model was fitted to."""
    spec = parse_formula(res.formula)
    opts = res.fit_options
    design, info = design_from_formula(spec, data, trials=opts.trials, offset=opts.offset, weights=opts.weights,
                                       missing=opts.missing)
    if tuple(info.group_labels) != tuple(res.group_labels):
        raise ValueError("data do not match the fit: different groups")
    D = res.D_array
    L = np.linalg.cholesky(D + 1e-12 * np.trace(D) * np.eye(D.shape[0]))
    # the fitted dispersion of any family (σ, the NB size, the gamma CV; 1 where there is none)
    params = Params(np.asarray(res.beta), WIDEN * L, np.asarray(res.params.dispersion, dtype=np.float64))
    b, _ = conditional_modes(params, design, family=res.family_spec)  # one compiled program
    return np.asarray(b)[info.layout.group_slot]


def _blup_cov(names, b) -> pd.DataFrame:
    """Sample covariance of the BLUPs (ddof = 1, as R's ``var(ranef(fit))``)."""
    cov = np.cov(np.asarray(b), rowvar=False, ddof=1).reshape(len(names), len(names))
    return pd.DataFrame(cov, index=list(names), columns=list(names))


def ranef_cov(res) -> pd.DataFrame:
    return _blup_cov(res.re_names, res.ranef_array)


def factor_ranef_cov(res) -> dict:
    """{factor: sample covariance of its BLUPs} of a fit with several terms."""
    return {label: _blup_cov(list(frame.columns), frame.to_numpy()) for label, frame in res.ranef.items()}


def shrinkage_table(res) -> pd.DataFrame:
    """D against the BLUPs, one row per random-effect term.

    ``varcorr_var``: the diagonal of D (the prior variance); ``blup_var``: the sample
    variance of the BLUPs (ddof = 1); ``mean_cond_var``: the mean over groups of the
    conditional (posterior) variance; ``shrinkage`` = 1 − blup_var / varcorr_var, the share
    of the prior variance that the posterior modes do not show (1 when the variance is 0).
    In a gaussian model varcorr_var ≈ blup_var + mean_cond_var, so shrinkage ≈
    mean_cond_var / varcorr_var. For q > 1 the correlations with every other term follow,
    from D (``varcorr_cor_<term>``) and from the BLUPs (``blup_cor_<term>``).
    """
    return _shrinkage(res.re_names, res.D_array, res.ranef_array, res.cond_var)


def factor_shrinkage(res) -> pd.DataFrame:
    """:func:`shrinkage_table` for each grouping factor of a fit with several terms, rows
    indexed by (group, term); a correlation column is NaN for the factors without that effect."""
    frames = {label: _shrinkage(list(frame.columns), res.D[label].to_numpy(), frame.to_numpy(), res.cond_var[label])
              for label, frame in res.ranef.items()}
    return pd.concat(frames, names=["group", "term"])


def _shrinkage(names, D, b, cond_var) -> pd.DataFrame:
    names = list(names)
    D = np.asarray(D)
    blup = _blup_cov(names, b).to_numpy()
    cond = np.mean(np.asarray(cond_var), axis=0)
    var = np.diag(D)
    with np.errstate(invalid="ignore", divide="ignore"):
        shrink = np.where(var > 0, 1.0 - np.diag(blup) / np.where(var > 0, var, 1.0), 1.0)
        table = pd.DataFrame({"varcorr_var": var, "blup_var": np.diag(blup), "mean_cond_var": np.diag(cond),
                              "shrinkage": shrink}, index=pd.Index(names, name="term"))
        if len(names) > 1:
            sd_d, sd_b = np.sqrt(var), np.sqrt(np.diag(blup))
            cor_d, cor_b = D / np.outer(sd_d, sd_d), blup / np.outer(sd_b, sd_b)
            for k, other in enumerate(names):
                table[f"varcorr_cor_{other}"] = cor_d[:, k]
                table[f"blup_cor_{other}"] = cor_b[:, k]
    return table
