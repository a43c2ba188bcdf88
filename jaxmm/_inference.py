"""Likelihood-ratio tests and confidence intervals (computing only; pandas frames out)."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pandas as pd
from jax.scipy.special import gammaincc, ndtri

from .errors import ArgumentError


def variance_parameters(D: np.ndarray, re_names) -> tuple[list[str], np.ndarray]:
    """The random-effect SDs (``sd_<name>``) then correlations (``cor_<a>_<b>``) of D
    (the last axes), in lme4's order: SDs, then the correlations row by row."""
    D = np.asarray(D)
    names = list(re_names)
    sd = np.sqrt(np.diagonal(D, axis1=-2, axis2=-1))
    labels, values = [f"sd_{n}" for n in names], [sd[..., k] for k in range(len(names))]
    for i in range(len(names)):
        for j in range(i):
            labels.append(f"cor_{names[j]}_{names[i]}")
            with np.errstate(invalid="ignore", divide="ignore"):
                values.append(D[..., i, j] / (sd[..., i] * sd[..., j]))
    return labels, np.stack(values, axis=-1)


def chi2_sf(x: float, df: int) -> float:
    return float(gammaincc(df / 2.0, jnp.asarray(x) / 2.0))


def normal_quantile(p: float) -> float:
    return float(ndtri(jnp.asarray(p)))


def wald_intervals(res, level: float) -> pd.DataFrame:
    z = normal_quantile(0.5 + level / 2.0)
    se = np.sqrt(np.diag(res.vcov_array))
    names = list(res.fixef_names)
    lower, upper = list(res.beta - z * se), list(res.beta + z * se)
    # As lme4's confint(method = "Wald"): no Wald intervals for the variance parameters.
    extra = variance_parameters(res.D, res.re_names)[0] + (["sigma"] if res.sigma is not None else []) + (
        ["theta"] if res.theta is not None else [])
    names += extra
    lower += [np.nan] * len(extra)
    upper += [np.nan] * len(extra)
    return pd.DataFrame({"lower": lower, "upper": upper}, index=names)


def check_level(level) -> float:
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0.0 < level < 1.0:
        raise ArgumentError(f"level must be a number between 0 and 1, got {level!r}")
    return float(level)


def _ml_loglik(res) -> float:
    """The ML log-likelihood of a REML fit, refitted on its stored design."""
    from ._engine import fit_lmm
    from ._sharding import to_host

    out = fit_lmm(None, res.design, False, blocks=res.re_blocks)
    return float(to_host(out["loglik"]))


def anova(*models, names=None) -> pd.DataFrame:
    """Likelihood-ratio tests between nested models fitted to the same rows, as lme4's
    ``anova``: models sorted by their number of parameters, each tested against the one
    before. REML fits are refitted by ML first (lme4's default ``refit = TRUE``), since
    REML criteria of models with different fixed effects are not comparable; the refitted
    models are listed in ``attrs["refitted"]``.
    """
    from ._results import MixedModelResult

    if len(models) < 2:
        raise ArgumentError("anova needs at least two fitted models")
    for k, m in enumerate(models):
        if not isinstance(m, MixedModelResult):
            raise ArgumentError(f"anova: argument {k + 1} is a {type(m).__name__}, not a fitted model")
    names = [m.formula for m in models] if names is None else list(names)
    if len(names) != len(models) or len(set(names)) != len(names):
        raise ArgumentError("names must give one distinct name per model")
    first = models[0]
    for name, m in zip(names, models):
        if m.family != first.family or m.link != first.link:
            raise ArgumentError(f"anova: model {name!r} is {m.family}({m.link}), the first is "
                                f"{first.family}({first.link}); likelihoods of different families are not nested")
        if m.n_obs != first.n_obs or m.formula.split("~")[0].strip() != first.formula.split("~")[0].strip():
            raise ArgumentError(f"anova: model {name!r} was not fitted to the same response and rows "
                                f"({m.n_obs} rows) as the first ({first.n_obs} rows)")
    refitted = [name for name, m in zip(names, models) if m.method == "REML"]
    loglik = [(_ml_loglik(m) if m.method == "REML" else m.loglik) for m in models]
    order = sorted(range(len(models)), key=lambda k: models[k].npar)
    rows = []
    for pos, k in enumerate(order):
        m, ll = models[k], loglik[k]
        row = {"npar": m.npar, "AIC": -2 * ll + 2 * m.npar, "BIC": -2 * ll + math.log(m.n_obs) * m.npar,
               "loglik": ll, "deviance": -2 * ll, "chisq": np.nan, "df": np.nan, "p": np.nan}
        if pos:
            prev = order[pos - 1]
            chisq = max(2.0 * (ll - loglik[prev]), 0.0)
            df = m.npar - models[prev].npar
            row.update(chisq=chisq, df=df, p=chi2_sf(chisq, df) if df > 0 else np.nan)
        rows.append(row)
    table = pd.DataFrame(rows, index=[names[k] for k in order])
    table["df"] = table["df"].astype("Int64")
    table.attrs["refitted"] = refitted
    return table


def boot_intervals(res, level: float, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Percentile intervals from ``res.bootstrap(n, seed)`` (lme4's ``type = "perc"``)."""
    boot = res.bootstrap(n, seed)
    keep = boot.attrs["converged"]
    tail = (1.0 - level) / 2.0
    q = boot[keep].quantile([tail, 1.0 - tail])
    return pd.DataFrame({"lower": q.iloc[0].to_numpy(), "upper": q.iloc[1].to_numpy()}, index=list(boot.columns))
