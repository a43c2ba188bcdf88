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
    all 0, on Satterthwaite's denominator degrees of freedom, type III as lmerTest's default:
    a term inside an interaction (``x`` beside ``x:C(f)``) is tested on the unweighted average
    over the other factors' levels (a numeric variable's effect at 0), whatever the coding,
    with every cell present.

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
    test that its coefficients are all 0 (type III: a term inside an interaction is tested on
    the unweighted average over the other factors' levels, :func:`_type3_rows`), its
    denominator df by Satterthwaite's method (:func:`._satterthwaite.f_test`); columns sum_sq,
    mean_sq, num_df, den_df, F, p."""
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
    factors = {t: [str(f) for f in t.factors] for t in terms}
    names = {t: list(model.column_names[model.term_slices[t]]) for t in terms}
    parts, beta, sigma2 = res._satterthwaite, res.fixef.to_numpy(), float(res.sigma) ** 2
    rows, labels = [], []
    for term in terms:
        outer = [u for u in terms if set(factors[term]) < set(factors[u])]
        if outer:
            L = _type3_rows(term, outer, factors, names, kept, spec)
        else:
            columns = [kept.index(name) for name in names[term] if name in kept]
            L = np.eye(len(beta))[columns]
        if not len(L):  # every column aliased and dropped
            continue
        F, q, ddf, p = f_test(parts, beta, L)
        rows.append({"sum_sq": F * q * sigma2, "mean_sq": F * sigma2, "num_df": q, "den_df": ddf, "F": F, "p": p})
        labels.append(spec.display(str(term)))
    return pd.DataFrame(rows, index=labels)


# formulaic's column names of the codings whose columns sum to 0 over the levels
ZERO_SUM_CODES = ("[S.", "[H.", "[D.", "[.")


def _type3_rows(term, outer, factors, names, kept, spec) -> np.ndarray:
    """The contrasts of a term inside interactions, as lmerTest's type III: each of the
    term's columns plus, for every interaction containing it, that interaction's columns at
    the same levels of the term's factors, weighted by the mean over the levels of the other
    factors' codes (treatment: 1/levels; sum, Helmert, difference, polynomial: 0; a numeric
    variable: 0, its effect taken at 0). This is the hypothesis that the term's unweighted
    marginal means (or average slope) are equal, whatever the cell counts and codings. A
    factor without its main effect in the model, and empty cells (aliased columns), are
    refused."""
    display = lambda t: repr(spec.display(str(t)))

    def refuse(why):
        raise ArgumentError(f"anova: the type III F test of {display(term)}, a term inside the interaction "
                            f"{display(outer[0])}, is built for factors with their main effects and every cell "
                            f"present; here {why}. Compare fits with and without the term: anova(m0, m1)")

    def split(column, term_factors):
        pieces = column.split(":")
        if len(pieces) != len(term_factors):
            refuse(f"the column {column!r} cannot be read")
        return dict(zip(term_factors, pieces))

    main = {tuple(f): t for t, f in factors.items() if len(f) == 1}
    weight_of = {}
    for u in outer:
        for f in set(factors[u]) - set(factors[term]):
            own = main.get((f,))
            if own is None:
                refuse(f"{spec.display(f)!r} has no main effect")
            columns = names[own]
            if columns == [f]:
                weight_of[f] = 0.0  # a numeric variable
            elif all(c.startswith(f + "[T.") for c in columns):
                weight_of[f] = 1.0 / (len(columns) + 1)  # each treatment code's mean over the levels
            elif all(c.startswith(tuple(f + code for code in ZERO_SUM_CODES)) for c in columns):
                weight_of[f] = 0.0  # sum, Helmert, difference and polynomial codes average to 0
            else:
                refuse(f"{spec.display(f)!r} has a coding whose mean over its levels is not known")
    position = {name: k for k, name in enumerate(kept)}
    L = []
    for column in names[term]:
        if column not in position:
            refuse(f"the column {column!r} is aliased (an empty cell)")
        own = split(column, factors[term])
        row = np.zeros(len(kept))
        row[position[column]] = 1.0
        for u in outer:
            for other in names[u]:
                pieces = split(other, factors[u])
                if any(pieces[f] != own[f] for f in factors[term]):
                    continue
                weight = float(np.prod([weight_of[f] for f in pieces if f not in own]))
                if weight:
                    if other not in position:
                        refuse(f"the column {other!r} is aliased (an empty cell)")
                    row[position[other]] += weight
        L.append(row)
    return np.array(L)
