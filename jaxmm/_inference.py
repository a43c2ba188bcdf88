"""Confidence intervals and the distributions they use (computing only; pandas frames out)."""
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


def wald_table(fixef: pd.Series, vcov: pd.DataFrame) -> pd.DataFrame:
    """Estimates, Wald standard errors, z values and two-sided normal p-values."""
    se = np.sqrt(np.diag(vcov.to_numpy()))
    z = fixef.to_numpy() / se
    p = np.array([math.erfc(abs(v) / math.sqrt(2.0)) for v in z])
    return pd.DataFrame({"estimate": fixef.to_numpy(), "std_error": se, "z": z, "p": p}, index=fixef.index)


DDF = ("Satterthwaite", "normal")


def coef_table(res, ddf=None) -> pd.DataFrame:
    """The fixed effects' table: for a gaussian fit with ``ddf="Satterthwaite"`` (its
    default) estimate, std_error, df, t and p from Student's t on Satterthwaite's df (as
    lmerTest); otherwise (``"normal"``, every other family) estimate, std_error, z and p."""
    exact = res.family == "gaussian"
    ddf = ("Satterthwaite" if exact else "normal") if ddf is None else ddf
    if ddf not in DDF:
        raise ArgumentError(f"ddf must be one of {list(DDF)}, got {ddf!r}")
    table = wald_table(res.fixef, res.vcov)
    if ddf == "normal":
        return table
    if not exact:
        raise ArgumentError(f"ddf='Satterthwaite' applies to gaussian fits; a {res.family} fit has z statistics "
                            "(ddf='normal')")
    from ._satterthwaite import coefficient_df, t_two_sided

    df = coefficient_df(res)
    t = table["z"].to_numpy()
    return pd.DataFrame({"estimate": table["estimate"], "std_error": table["std_error"], "df": df, "t": t,
                         "p": np.asarray(t_two_sided(t, df))}, index=table.index)


def wald_intervals(res, level: float) -> pd.DataFrame:
    z = normal_quantile(0.5 + level / 2.0)
    se = np.sqrt(np.diag(res.vcov_array))
    names = list(res.fixef_names)
    lower, upper = list(res.beta - z * se), list(res.beta + z * se)
    # As lme4's confint(method = "Wald"): no Wald intervals for the variance parameters.
    extra = variance_parameters(res.D_array, res.re_names)[0] + (["sigma"] if res.sigma is not None else []) + (
        ["nb_size"] if res.nb_size is not None else [])
    names += extra
    lower += [np.nan] * len(extra)
    upper += [np.nan] * len(extra)
    return pd.DataFrame({"lower": lower, "upper": upper}, index=names)


def confint(res, method: str, level, options: dict, wald, profile) -> pd.DataFrame:
    """``confint``'s arguments checked and dispatched: ``wald(res, level)``,
    :func:`boot_intervals` or ``profile(res, level)``."""
    level = check_level(level)
    allowed = {"boot": {"n", "seed"}}.get(method, set())
    unknown = sorted(set(options) - allowed)
    if method in ("wald", "boot", "profile") and unknown:
        takes = "n= and seed=" if allowed else "no options"
        raise ArgumentError(f"confint(method={method!r}) takes {takes}, got {unknown}")
    if method == "wald":
        return wald(res, level)
    if method == "boot":
        return boot_intervals(res, level, **options)
    if method == "profile":
        return profile(res, level)
    raise ArgumentError(f"unknown method {method!r}; choose one of ['wald', 'profile', 'boot']")


def check_level(level) -> float:
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0.0 < level < 1.0:
        raise ArgumentError(f"level must be a number between 0 and 1, got {level!r}")
    return float(level)


def boot_intervals(res, level: float, n: int = 500, seed: int = 0) -> pd.DataFrame:
    """Percentile intervals from ``res.bootstrap(n, seed)`` (lme4's ``type = "perc"``)."""
    boot = res.bootstrap(n, seed)
    keep = boot.attrs["converged"]
    tail = (1.0 - level) / 2.0
    q = boot[keep].quantile([tail, 1.0 - tail])
    return pd.DataFrame({"lower": q.iloc[0].to_numpy(), "upper": q.iloc[1].to_numpy()}, index=list(boot.columns))
