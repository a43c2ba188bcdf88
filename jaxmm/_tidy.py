"""Tidy frames of a fit in the vocabulary that broom.mixed (and pymer4) share, in snake_case:
``tidy`` (fixed effects, variance parameters, BLUPs, per-group coefficients), ``glance`` (one
row of fit statistics), ``augment`` (fitted values and residuals per row), and lme4's
``coef``, ``fitted`` and ``residuals``. For one-term (``MixedModelResult``) and several-term
(``CrossedResult``) fits alike: each gives its rows and random effects through
:func:`_observed` and :func:`_factors`.
"""
from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._inference import normal_quantile
from .errors import ArgumentError

EFFECTS = ("fixed", "ran_pars", "ran_vals", "ran_coefs")
RESIDUALS = ("response", "pearson", "deviance")


def _observed(res):
    """(index, y, trials, weights, Xβ + offset, η, μ) of the fitted rows, in input order; y on
    the response's scale (a binomial's successes), μ the conditional mean per trial."""
    fixed, eta = res.linear_predictors()
    if hasattr(res, "rows"):  # several terms: the rows as the fit kept them
        rows = res.rows
        y, trials, weights, index = rows.y, rows.trials, rows.weights, rows.index
    else:
        from ._sharding import to_host

        slot = res.layout.row_slot
        y, trials, weights = (to_host(a)[slot] for a in (res.design.y, res.design.trials, res.design.weights))
        index = res.row_index
    n = len(index)
    trials = np.ones(n) if trials is None else np.asarray(trials, float)
    weights = np.ones(n) if weights is None else np.asarray(weights, float)
    mu = np.asarray(res.family_spec.inverse_link(jnp.asarray(eta)))
    return index, np.asarray(y, float), trials, weights, np.asarray(fixed), np.asarray(eta), mu


def _nb_size(res):
    return res.nb_size if hasattr(res, "nb_size") else res.sigma


def _factors(res):
    """[(group, effect names, level labels, BLUPs (m, q), conditional covariances (m, q, q),
    [(names, D block) per term])]: one entry per grouping factor."""
    if hasattr(res, "terms"):
        out = []
        for label, frame in res.ranef.items():
            terms = [(t.names, c @ c.T, t.structure) for t, c in zip(res.terms, res.chols) if t.label == label]
            out.append((label, list(frame.columns), [str(v) for v in frame.index], frame.to_numpy(),
                        np.asarray(res.cond_var[label]), terms))
        return out
    structure = len(res.re_names) if res.re_blocks is None else tuple(res.re_blocks)
    return [(res.group_name, list(res.re_names), [str(v) for v in res.group_labels], np.asarray(res.ranef_array),
             np.asarray(res.cond_var), [(tuple(res.re_names), res.D_array, structure)])]


def fitted(res) -> pd.Series:
    """The conditional mean of every fitted row (a binomial's per trial), lme4's ``fitted``."""
    index, *_, mu = _observed(res)
    return pd.Series(mu, index=index, name="fitted")


def residuals(res, type: str = "response") -> pd.Series:
    """lme4's residuals: ``response`` (y − μ, a binomial's proportion less μ), ``pearson``
    (divided by the family's variance function, times √weight; no dispersion) or ``deviance``
    (the signed square root of each row's unit deviance)."""
    if type not in RESIDUALS:
        raise ArgumentError(f"unknown residual type {type!r}; choose one of {list(RESIDUALS)}")
    index, y, trials, weights, _, _, mu = _observed(res)
    name = res.family
    if name == "binomial":
        y = y / trials
    if type == "response":
        values = y - mu
    elif type == "pearson":
        variance = {"gaussian": lambda: np.ones_like(mu), "binomial": lambda: mu * (1 - mu) / trials,
                    "poisson": lambda: mu, "gamma": lambda: mu * mu,
                    "negative_binomial": lambda: mu + mu * mu / _nb_size(res)}[name]()
        values = (y - mu) * np.sqrt(weights / variance)
    else:
        values = np.sign(y - mu) * np.sqrt(np.maximum(_unit_deviance(name, y, mu, trials, weights, res), 0.0))
    return pd.Series(values, index=index, name=f"{type}_residual")


def _xlogy(x, y):
    """x log y, 0 where x is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x == 0, 0.0, x * np.log(np.where(x == 0, 1.0, y)))


def _unit_deviance(name, y, mu, trials, weights, res):
    if name == "gaussian":
        return weights * (y - mu) ** 2
    if name == "binomial":
        return 2 * trials * (_xlogy(y, y / mu) + _xlogy(1 - y, (1 - y) / (1 - mu)))
    if name == "poisson":
        return 2 * (_xlogy(y, y / mu) - (y - mu))
    if name == "gamma":
        return 2 * (-np.log(y / mu) + (y - mu) / mu)
    k = _nb_size(res)
    return 2 * (_xlogy(y, y / mu) - (y + k) * np.log((y + k) / (mu + k)))


def glance(res) -> pd.DataFrame:
    """One row: ``nobs, sigma, loglik, aic, bic``, then ``reml_crit`` (REML fits) or
    ``deviance`` (lme4's: −2 loglik for an LMM, the sum of squared deviance residuals for a
    GLMM), and ``df_residual`` (nobs less the number of parameters)."""
    row = {"nobs": res.n_obs, "sigma": 1.0 if res.sigma is None or res.family == "negative_binomial" else res.sigma,
           "loglik": res.loglik, "aic": res.aic, "bic": res.bic}
    if res.method == "REML":
        row["reml_crit"] = -2.0 * res.loglik
    elif res.family == "gaussian":
        row["deviance"] = -2.0 * res.loglik
    else:
        row["deviance"] = float(np.sum(residuals(res, "deviance") ** 2))
    row["df_residual"] = res.n_obs - res.npar
    return pd.DataFrame([row])


def augment(res, data=None) -> pd.DataFrame:
    """The fitted rows with ``.fitted`` (η, conditional on the BLUPs), ``.resid`` (response
    residuals for gaussian fits, deviance residuals otherwise, as lme4's default),
    ``.fixed`` (Xβ + offset) and ``.mu`` (the conditional mean); a one-term LMM's also
    ``.hat`` and ``.cooksd`` (lme4's ``hatvalues`` and ``cooks.distance``, :mod:`._influence`).
    ``data``: the fitted table, whose columns come first (its rows as fitted, after any
    dropped for missing values)."""
    index, _, _, _, fixed, eta, mu = _observed(res)
    if data is None:
        out = pd.DataFrame(index=index)
    else:
        from ._table import as_pandas

        data = as_pandas(data)
        missing = index.difference(data.index)
        if len(missing):
            raise ArgumentError(f"augment: data lacks {len(missing)} of the fitted rows (first index labels: "
                                f"{list(missing[:5])}); pass the table the model was fitted to")
        out = data.loc[index].copy()
    resid = residuals(res, "response" if res.family == "gaussian" else "deviance")
    columns = {".fitted": eta, ".resid": resid.to_numpy()}
    if res.family == "gaussian" and not hasattr(res, "terms"):
        # leverage and Cook's distance of a one-term LMM (lme4 warns that a GLMM's make no sense)
        from ._influence import cooks_distance, hat_values

        hat = hat_values(res)
        columns.update({".hat": hat, ".cooksd": cooks_distance(res, hat, residuals(res, "pearson").to_numpy())})
    return out.assign(**columns, **{".fixed": fixed, ".mu": mu})


def coef(res) -> dict:
    """lme4's ``coef``: {group: one row per level, the fixed effects plus the level's BLUP of
    every effect that is also a fixed effect}."""
    beta = res.fixef
    out = {}
    for group, names, levels, b, *_ in _factors(res):
        frame = pd.DataFrame(np.tile(beta.to_numpy(), (len(levels), 1)), index=levels, columns=list(beta.index))
        for k, name in enumerate(names):
            if name in frame.columns:
                frame[name] = frame[name].to_numpy() + b[:, k]
        frame.index.name = group
        out[group] = frame
    return out


def _ran_pars(res) -> list[dict]:
    """SDs and correlations of every term in lme4's order (each SD, then its correlations
    with the effects after it in its block), then the residual SD of a gaussian fit."""
    from ._params import same_block

    rows = []
    for group, *_, terms in _factors(res):
        for names, D, structure in terms:
            sd = np.sqrt(np.diag(D))
            for i, name in enumerate(names):
                rows.append({"group": group, "term": f"sd__{name}", "estimate": float(sd[i]), "key": ("sd", name)})
                for j in range(i + 1, len(names)):
                    if same_block(structure, i, j):
                        rho = float(D[i, j] / (sd[i] * sd[j])) if sd[i] * sd[j] > 0 else math.nan
                        rows.append({"group": group, "term": f"cor__{name}.{names[j]}", "estimate": rho,
                                     "key": ("cor", name, names[j])})
    if res.family == "gaussian":
        rows.append({"group": "Residual", "term": "sd__Observation", "estimate": float(res.sigma), "key": ("sigma",)})
    return rows


def tidy(res, effects="fixed", conf_int: bool = False, conf_level: float = 0.95, conf_method: str = "wald"):
    """broom.mixed's ``tidy``: one row per estimate, the columns ``effect, group, level,
    term, estimate, std_error, statistic, df, p_value, conf_low, conf_high`` where they apply
    (gaussian fits' fixed effects: t on Satterthwaite's df, as for an lmerTest fit).
    ``effects``: one of, or a list of, ``fixed``, ``ran_pars``, ``ran_vals``, ``ran_coefs``.
    ``conf_int`` adds intervals: Wald for the fixed effects; for ``ran_pars`` those of
    ``confint(conf_method)`` (``"profile"`` or ``"boot"``; Wald gives none, as in lme4)."""
    chosen = [effects] if isinstance(effects, str) else list(effects)
    unknown = [e for e in chosen if e not in EFFECTS]
    if unknown or not chosen:
        raise ArgumentError(f"effects must be among {list(EFFECTS)}, got {effects!r}")
    frames = [_TIDY[e](res, conf_int, conf_level, conf_method) for e in chosen]
    out = pd.concat(frames, ignore_index=True)
    order = ["effect", "group", "level", "term", "estimate", "std_error", "statistic", "df", "p_value", "conf_low",
             "conf_high"]
    return out[[c for c in order if c in out.columns]]


def _fixed(res, conf_int, conf_level, conf_method):
    # gaussian fits: t on Satterthwaite's df (broom.mixed's columns for an lmerTest fit)
    table = res.coef_table()
    satterthwaite = "df" in table.columns
    out = pd.DataFrame({"effect": "fixed", "term": list(table.index), "estimate": table["estimate"].to_numpy(),
                        "std_error": table["std_error"].to_numpy(),
                        "statistic": table["t" if satterthwaite else "z"].to_numpy()})
    if satterthwaite:
        out["df"] = table["df"].to_numpy()
    out["p_value"] = table["p"].to_numpy()
    if conf_int:
        z = normal_quantile(0.5 + conf_level / 2.0)
        out["conf_low"] = out["estimate"] - z * out["std_error"]
        out["conf_high"] = out["estimate"] + z * out["std_error"]
    return out


def _ran_pars_frame(res, conf_int, conf_level, conf_method):
    rows = _ran_pars(res)
    out = pd.DataFrame({"effect": "ran_pars", "group": [r["group"] for r in rows], "term": [r["term"] for r in rows],
                        "estimate": [r["estimate"] for r in rows]})
    if conf_int:
        ci = res.confint(conf_method, level=conf_level)
        names = [_confint_row(res, r) for r in rows]
        out["conf_low"] = [ci.loc[n, "lower"] if n in ci.index else math.nan for n in names]
        out["conf_high"] = [ci.loc[n, "upper"] if n in ci.index else math.nan for n in names]
    return out


def _confint_row(res, row) -> str:
    """The row of ``res.confint()`` that a variance parameter of :func:`_ran_pars` is."""
    key, suffix = row["key"], "" if not hasattr(res, "terms") else f"|{row['group']}"
    if key[0] == "sigma":
        return "sigma"
    if key[0] == "sd":
        return f"sd_{key[1]}{suffix}"
    return f"cor_{key[1]}_{key[2]}{suffix}"


def _ran_vals(res, conf_int, conf_level, conf_method):
    parts = []
    for group, names, levels, b, cond, _ in _factors(res):
        sd = np.sqrt(np.maximum(np.diagonal(cond, axis1=1, axis2=2), 0.0))
        for k, name in enumerate(names):  # term by term, levels within, as broom.mixed
            part = pd.DataFrame({"effect": "ran_vals", "group": group, "level": levels, "term": name,
                                 "estimate": b[:, k], "std_error": sd[:, k]})
            if conf_int:
                z = normal_quantile(0.5 + conf_level / 2.0)
                part["conf_low"], part["conf_high"] = b[:, k] - z * sd[:, k], b[:, k] + z * sd[:, k]
            parts.append(part)
    return pd.concat(parts, ignore_index=True)


def _ran_coefs(res, conf_int, conf_level, conf_method):
    if conf_int:
        raise ArgumentError("tidy(effects='ran_coefs') has no intervals (as in broom.mixed)")
    parts = []
    for group, frame in coef(res).items():
        for term in frame.columns:
            parts.append(pd.DataFrame({"effect": "ran_coefs", "group": group, "level": list(frame.index),
                                       "term": term, "estimate": frame[term].to_numpy()}))
    return pd.concat(parts, ignore_index=True)


_TIDY = {"fixed": _fixed, "ran_pars": _ran_pars_frame, "ran_vals": _ran_vals, "ran_coefs": _ran_coefs}


class TidyViews:
    """The tables of a result (one or several terms): ``coef_table`` and the methods of
    :mod:`._tidy`."""

    @functools.cached_property
    def _satterthwaite(self):
        """(V, ∂V/∂φ, A) of a gaussian fit, computed once: summary, tidy, to_dict and anova
        all read Satterthwaite's df, which costs seconds for a large dense remainder."""
        from ._satterthwaite import pieces

        return pieces(self)

    def coef_table(self, ddf=None) -> pd.DataFrame:
        """The fixed effects with their standard errors and tests.

        Parameters
        ----------
        ddf : {"Satterthwaite", "normal"}, optional
            Gaussian fits: ``"Satterthwaite"`` (default) tests on Satterthwaite's degrees of
            freedom, as lmerTest; ``"normal"`` (every other family's) against the standard normal.

        Returns
        -------
        pandas.DataFrame
            ``estimate``, ``std_error``, then ``df``, ``t`` and ``p`` (Satterthwaite) or ``z`` and
            ``p`` (normal), one row per fixed effect.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").coef_table().round(4)
                     estimate  std_error    df        t    p
        (Intercept)  251.4051     6.8246  17.0  36.8383  0.0
        Days          10.4673     1.5458  17.0   6.7715  0.0
        """
        from ._inference import coef_table

        return coef_table(self, ddf)

    def tidy(self, effects="fixed", conf_int: bool = False, conf_level: float = 0.95,
             conf_method: str = "wald") -> pd.DataFrame:
        """broom.mixed's ``tidy``: one row per estimate.

        Parameters
        ----------
        effects : str or list of str
            ``"fixed"``, ``"ran_pars"`` (SDs and correlations), ``"ran_vals"`` (BLUPs and their
            conditional SDs), ``"ran_coefs"`` (per-group coefficients), or a list of them.
        conf_int : bool
            Add ``conf_low`` and ``conf_high``: Wald for fixed effects and BLUPs; for ``ran_pars``
            those of ``confint(conf_method)`` (Wald gives none, as in lme4).
        conf_level : float
            The intervals' coverage.
        conf_method : {"wald", "profile", "boot"}
            The intervals of the variance parameters.

        Returns
        -------
        pandas.DataFrame
            The columns ``effect, group, level, term, estimate, std_error, statistic, df, p_value,
            conf_low, conf_high`` where they apply (gaussian fits' fixed effects: t on
            Satterthwaite's df, as for an lmerTest fit).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").tidy("ran_pars").round(3)
             effect     group                   term  estimate
        0  ran_pars   Subject        sd__(Intercept)    24.740
        1  ran_pars   Subject  cor__(Intercept).Days     0.066
        2  ran_pars   Subject               sd__Days     5.922
        3  ran_pars  Residual        sd__Observation    25.592
        """
        return tidy(self, effects, conf_int, conf_level, conf_method)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's ``glance``: one row of fit statistics.

        Returns
        -------
        pandas.DataFrame
            ``nobs, sigma, loglik, aic, bic``, then ``reml_crit`` (REML fits) or ``deviance``
            (lme4's: −2 loglik for an LMM, the sum of squared deviance residuals for a GLMM), and
            ``df_residual`` (nobs less the number of parameters).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").glance().round(3)
           nobs   sigma   loglik       aic       bic  reml_crit  df_residual
        0   180  25.592 -871.814  1755.628  1774.786   1743.628          174
        """
        return glance(self)

    def augment(self, data=None) -> pd.DataFrame:
        """broom.mixed's ``augment``: the fitted rows with fitted values and residuals.

        Parameters
        ----------
        data : table, optional
            The fitted table, whose columns come first (its rows as fitted, after any dropped
            for missing values).

        Returns
        -------
        pandas.DataFrame
            ``.fitted`` (η, conditional on the BLUPs), ``.resid`` (response residuals for gaussian
            fits, deviance residuals otherwise, as lme4's default), for a one-term LMM ``.hat``
            (leverage) and ``.cooksd`` (Cook's distance) as lme4's ``hatvalues`` and
            ``cooks.distance``, then ``.fixed`` (Xβ + offset) and ``.mu`` (the conditional mean).

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").augment().head(3).round(4)
            .fitted   .resid    .hat  .cooksd    .fixed       .mu
        0  253.6637  -4.1037  0.2293   0.0050  251.4051  253.6637
        1  273.3299 -14.6252  0.1697   0.0402  261.8724  273.3299
        2  292.9962 -42.1956  0.1268   0.2261  272.3397  292.9962
        """
        return augment(self, data)

    def coef(self) -> dict:
        """lme4's ``coef``: each group's coefficients, the fixed effects plus its BLUPs.

        Returns
        -------
        dict of str to pandas.DataFrame
            One frame per grouping factor, one row per level; a column gains the level's BLUP
            where the effect is random too.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").coef()["Subject"].head(2).round(3)
                 (Intercept)    Days
        Subject
        308          253.664  19.666
        309          211.007   1.848
        """
        return coef(self)

    def fitted(self) -> pd.Series:
        """The conditional mean of every fitted row (a binomial's per trial), lme4's ``fitted``.

        Returns
        -------
        pandas.Series
            Indexed as the fitted rows.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("sleepstudy").fitted().head(2).round(3)
        0    253.664
        1    273.330
        Name: fitted, dtype: float64
        """
        return fitted(self)

    def residuals(self, type: str = "response") -> pd.Series:
        """lme4's residuals of the fitted rows.

        Parameters
        ----------
        type : {"response", "pearson", "deviance"}
            y − μ (a binomial's proportion less μ); that divided by the family's variance
            function, times √weight (no dispersion); or the signed square root of each row's unit
            deviance.

        Returns
        -------
        pandas.Series
            Indexed as the fitted rows.

        Examples
        --------
        >>> import jaxmm
        >>> jaxmm.fit_example("cbpp").residuals("deviance").head(2).round(3)
        0   -1.438
        1    0.989
        Name: deviance_residual, dtype: float64
        """
        return residuals(self, type)
