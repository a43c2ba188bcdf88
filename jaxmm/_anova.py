"""Likelihood-ratio tests between nested fits (lme4's ``anova``), and the F tests of one linear
mixed model's fixed-effect terms on Satterthwaite's degrees of freedom (lmerTest's ``anova``)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._criteria import criteria
from ._engine import fit_lmm
from ._inference import chi2_sf
from ._crossed_result import CrossedResult
from ._results import MixedModelResult
from ._sharding import to_host
from .errors import ArgumentError


def _ml_loglik(res) -> float:
    """The ML log-likelihood of a REML fit, refitted on its stored design."""
    if isinstance(res, CrossedResult):
        from ._crossed_refit import refit

        return float(refit(res, reml=False)["loglik"])
    out = fit_lmm(None, res.design, False, blocks=res.re_blocks)
    return float(to_host(out["loglik"]))


def anova(*models, names=None) -> pd.DataFrame:
    """Likelihood-ratio tests between nested fits (lme4's ``anova``), or the F tests of one
    linear mixed model's terms (lmerTest's ``anova``).

    With several models: fitted to the same rows, sorted by their number of parameters, each
    tested against the one before. REML fits are refitted by ML first (lme4's default
    ``refit = TRUE``), since REML criteria of models with different fixed effects are not
    comparable; the refitted models are listed in ``attrs["refitted"]``. With one gaussian
    fit: for each fixed-effect term but the intercept, the F test that its coefficients are
    all 0, on Satterthwaite's denominator degrees of freedom. A term inside an interaction
    (``x`` beside ``x:C(f)``) is refused: its test depends on the contrasts (lmerTest's type
    III construction), which is not built.

    Parameters
    ----------
    *models : MixedModelResult or CrossedResult
        One gaussian fit, or two or more fits of one family to the same response and rows.
    names : list of str, optional
        A label per model (the formulas by default).

    Returns
    -------
    pandas.DataFrame
        Several models: one row per model with ``npar, AIC, BIC, loglik, deviance, chisq,
        df, p``. One model: one row per term with ``sum_sq, mean_sq, num_df, den_df, F, p``.

    Examples
    --------
    >>> import jaxmm
    >>> data = jaxmm.load_example("sleepstudy")
    >>> m0 = jaxmm.fit("Reaction ~ Days + (1 | Subject)", data)
    >>> m1 = jaxmm.fit("Reaction ~ Days + (Days | Subject)", data)
    >>> jaxmm.anova(m0, m1, names=["intercept", "slope"])[["npar", "loglik", "chisq", "df"]].round(2)
               npar   loglik  chisq    df
    intercept     4  -897.04    NaN  <NA>
    slope         6  -875.97  42.14     2
    >>> jaxmm.anova(m1)[["num_df", "den_df", "F"]].round(2)
          num_df  den_df      F
    Days       1    17.0  45.85
    """
    if len(models) == 1 and isinstance(models[0], (MixedModelResult, CrossedResult)) and names is None:
        return f_tests(models[0])
    if len(models) < 2:
        raise ArgumentError("anova needs one linear mixed model (F tests of its terms) or two or more fitted models")
    for k, m in enumerate(models):
        if not isinstance(m, (MixedModelResult, CrossedResult)):
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
        crit = criteria(ll, m.npar, m.n_obs)
        row = {"npar": m.npar, "AIC": crit["AIC"], "BIC": crit["BIC"], "loglik": ll, "deviance": crit["deviance"],
               "chisq": np.nan, "df": np.nan, "p": np.nan}
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


def f_tests(res) -> pd.DataFrame:
    """lmerTest's ``anova`` of one LMM: for each fixed-effect term but the intercept, the F
    test that its coefficients are all 0, its denominator df by Satterthwaite's method
    (:func:`._satterthwaite.f_test`); columns sum_sq, mean_sq, num_df, den_df, F, p.

    A term inside an interaction (``x`` beside ``x:C(f)``) is refused: its test then depends
    on the contrasts (lmerTest's type III construction), which is not built; the interaction
    itself, and every term of a model without interactions, is tested as lmerTest does."""
    from ._formula import parse_formula
    from ._satterthwaite import f_test

    if not isinstance(res, (MixedModelResult, CrossedResult)):
        raise ArgumentError(f"anova: the argument is a {type(res).__name__}, not a fitted model")
    if res.family != "gaussian":
        raise ArgumentError(f"F tests of one fit are for linear mixed models, not {res.family!r}; compare nested "
                            "fits with anova(m0, m1)")
    encoders = res.terms[0].encoders if isinstance(res, CrossedResult) else res.encoders
    spec, model = parse_formula(res.formula), encoders.fixed
    kept = list(encoders.fixed_kept)
    terms = [t for t in model.term_slices if str(t) != "1"]
    factors = {t: {str(f) for f in t.factors} for t in terms}
    parts, beta, sigma2 = res._satterthwaite, res.fixef.to_numpy(), float(res.sigma) ** 2
    rows, labels = [], []
    for term in terms:
        outer = [u for u in terms if factors[term] < factors[u]]
        if outer:
            raise ArgumentError(f"anova: the F test of {spec.display(str(term))!r}, a term inside the interaction "
                                f"{spec.display(str(outer[0]))!r}, depends on the contrasts (lmerTest's type III); "
                                "it is not built. Compare fits with and without the term: anova(m0, m1)")
        columns = [kept.index(name) for name in model.column_names[model.term_slices[term]] if name in kept]
        if not columns:  # every column aliased and dropped
            continue
        F, q, ddf, p = f_test(parts, beta, np.eye(len(beta))[columns])
        rows.append({"sum_sq": F * q * sigma2, "mean_sq": F * sigma2, "num_df": q, "den_df": ddf, "F": F, "p": p})
        labels.append(spec.display(str(term)))
    return pd.DataFrame(rows, index=labels)
