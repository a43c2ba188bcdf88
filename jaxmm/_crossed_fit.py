"""``fit`` for formulas with several random-effect terms (or a factor that is an interaction):
the table → each term's effects and factor codes → the blocked statistics → the compiled
exact LMM (:mod:`._crossed_engine`) → :class:`._crossed_result.CrossedResult`.

The gaussian family is the exact LMM (REML/ML), the others the Laplace approximation
(:mod:`._crossed_laplace`). The options that split or batch a fit (``by=``, ``devices=``) and
float32 are refused with an error that says they are not built yet.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import _progress
from ._crossed_engine import estimate, shared_terms
from ._crossed_lmm import plan_terms
from ._crossed_result import CrossedResult, FactorTerm, FittedRows
from ._design import _rows_from_formula
from ._grouping import interaction, unique_inverse
from ._sharding import to_host
from ._optimize import OptOptions, Status
from ._results import FitOptions
from ._params import n_chol
from ._table import _column, as_pandas
from .errors import ArgumentError, DataError


def _refuse(what: str):
    raise ArgumentError(f"{what} is not available yet for formulas with several random-effect terms "
                        "(or an interaction factor such as (1 | a:b)); fit them without it")


def _factor_column(data: pd.DataFrame, factor: tuple) -> tuple[pd.DataFrame, str]:
    """The factor as a column of ``data``: itself for one column; for an interaction a new
    column (named by its label, made unique) of the present combinations, "a1:b2"."""
    if len(factor) == 1:
        _column(data, factor[0], "grouping")
        return data, factor[0]
    name = ":".join(factor)
    while name in data.columns:  # a table column spelled like the label is left alone
        name += "'"
    return data.assign(**{name: interaction(data, factor)}), name


def fit_terms(spec, data, fam, method: str, formula: str, *, trials, offset, weights, missing, dtype, verbose, by,
              devices, nAGQ) -> CrossedResult:
    if by is not None:
        _refuse("by=")
    if devices is not None:
        _refuse("devices=")
    if dtype != "float64":
        _refuse("dtype='float32'")
    if nAGQ != 1:
        raise ArgumentError("nAGQ > 1 (adaptive quadrature) integrates one random-effect term; this formula has "
                            f"{len(spec.terms)}, as lme4 refuses too")
    table = as_pandas(data)
    if len(table) == 0:
        raise DataError("the data have no rows")
    columns = []
    for term in spec.terms:
        table, name = _factor_column(table, term.factor)
        columns.append(name)
    # The first term's rows are checked against every column of the formula, so rows with
    # a missing value anywhere are dropped (or named) once, for every term alike.
    rows, specs = [], []
    for k, (term, column) in enumerate(zip(spec.terms, columns)):
        one = dataclasses.replace(spec, random=term.random, random_text=term.random_text, group=column,
                                  correlated=term.correlated, terms=())
        specs.append(one)
        if k == 0:
            first = _rows_from_formula(one, table, trials=trials, offset=offset, weights=weights, missing=missing,
                                       check_response=fam.check_response)
            rows.append(first)
        else:
            rows.append(_rows_from_formula(one, first.data, missing="raise"))
    n = first.y.shape[0]
    factors = []
    for term, r, one in zip(spec.terms, rows, specs):
        levels, codes = unique_inverse(r.groups)
        labels = tuple(str(v) for v in np.asarray(levels))
        if len(labels) < 2:
            raise DataError(f"grouping factor {term.label!r} has a single level; a random effect needs at least "
                            "two groups")
        if len(labels) == n and fam.exact:
            raise DataError(f"grouping factor {term.label!r} has one level per row: its variance cannot be told "
                            "apart from the residual variance (lme4 refuses such a model too)")
        structure = r.Z.shape[1] if term.correlated else (1,) * r.Z.shape[1]
        factors.append(FactorTerm(term.label, r.re_names, labels, structure, np.asarray(codes), r.Z,
                                  columns=tuple(term.factor), values=np.asarray(levels), spec=one,
                                  encoders=r.encoders))
    order, terms = plan_terms([f.Z.shape[1] for f in factors], [len(f.levels) for f in factors],
                              [f.codes for f in factors], [f.label for f in factors])
    ordered = [factors[k] for k in order]
    fitted = FittedRows(first.X, first.y, first.offset, first.trials, first.weights, first.data.index, terms)
    p = first.X.shape[1]
    out = _reported(verbose, lambda: estimate(fitted, tuple(ordered), fam, method == "REML",
                                              OptOptions(verbose=bool(verbose))))
    if fam.exact:
        sigma, vcov = float(out["sigma"]), np.asarray(out["vcov"])
    else:
        sigma = float(out["dispersion"]) if fam.n_dispersion else None
        # β's covariance: the inverse Hessian of −ℓ in φ, its β block (as for one term)
        vcov = np.linalg.inv(np.asarray(out["hess"]))[:p, :p]
    shared = shared_terms(ordered)
    # rows of prior weight 0 take no part in the fit (lme4's nobs leaves them out too)
    n_obs = n if first.weights is None else int(np.sum(first.weights > 0))
    return CrossedResult(
        formula=formula, method=method, fixef=pd.Series(np.asarray(out["beta"]), index=list(first.fixef_names)),
        vcov=pd.DataFrame(vcov, index=list(first.fixef_names), columns=list(first.fixef_names)),
        sigma=sigma, loglik=float(out["loglik"]), n_obs=n_obs, family=fam.name, link=fam.link,
        n_dropped=first.n_dropped, terms=tuple(ordered), chols=tuple(np.asarray(c) for c in out["chols"]),
        ranefs=tuple(np.asarray(b) for b in out["ranefs"]),
        cond_vars=tuple(np.asarray(v) for v in out["cond_vars"]), shared=shared,
        cross_vars=tuple(np.asarray(v) for v in out["cross_vars"]),
        status=Status(int(out["status"])), n_iter=int(out["n_iter"]), n_eval=int(out["n_eval"]),
        max_abs_grad=float(np.max(np.abs(out["grad"]))) if np.size(out["grad"]) else 0.0,
        npar=p + sum(n_chol(f.structure) for f in ordered) + (1 if fam.exact else fam.n_dispersion),
        family_spec=fam, fit_options=FitOptions(trials=trials, offset=offset, weights=weights, missing=missing),
        rows=fitted,
    )


def _reported(verbose, run) -> dict:
    """``run()``'s outputs on the host, its optimiser's iterations reported as ``fit``'s
    ``verbose`` says (:mod:`._progress`)."""
    if verbose:
        _progress.start(None if verbose is True else verbose)
    try:
        return _host(run())
    finally:
        _progress.stop()


def _host(out: dict) -> dict:
    return {k: tuple(to_host(x) for x in v) if isinstance(v, tuple) else to_host(v) for k, v in out.items()}
