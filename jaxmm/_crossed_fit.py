"""``fit`` for formulas with several random-effect terms (or a factor that is an interaction):
the table → each term's effects and factor codes → the blocked statistics → the compiled
exact LMM (:mod:`._crossed_engine`) → :class:`._crossed_result.CrossedResult`.

The gaussian family is the exact LMM (REML/ML), the others the Laplace approximation
(:mod:`._crossed_laplace`); ``devices=`` splits the cells, the pairs of cells and a GLMM's
rows over the devices (:mod:`._crossed_shard`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from . import _progress
from ._crossed_engine import estimate, shared_terms
from ._crossed_lmm import plan_terms
from ._crossed_batch import CrossedBatchResult
from ._crossed_result import CrossedResult, FactorTerm, FittedRows
from ._collective import total
from ._process_crossed import Job, agreed_levels, distinct, own_rows
from ._dataset import is_dataset, open_dataset, used_columns
from ._design import _rows_from_formula
from ._grouping import interaction, unique_inverse
from ._stream_rows import streamed_rows
from ._sharding import make_mesh, outputs_to_host, resolve_devices
from ._optimize import OptOptions, Status
from ._results import FitOptions
from ._params import n_chol
from ._table import _column, as_pandas
from ._warn import warn
from .errors import ArgumentError, ConvergenceWarning, DataError, SingularFitWarning


def _factor_name(columns, factor: tuple) -> str:
    """The grouping column of a term's factor: its column, or for an interaction a new column
    named by its label (made unique against ``columns``), holding the combinations "a1:b2"."""
    if len(factor) == 1:
        return factor[0]
    name = ":".join(factor)
    while name in columns:  # a table column spelled like the label is left alone
        name += "'"
    return name


def fit_terms(spec, data, fam, method: str, formula: str, *, trials, offset, weights, missing, dtype, verbose, by,
              devices, nAGQ, own=False):
    """The fit of a formula with several terms: a :class:`CrossedResult`, or with ``by=`` a
    :class:`CrossedBatchResult` of one fit per value of that column. ``own``: each process of
    a ``jax.distributed`` job reads its own rows of the dataset (:mod:`._process_crossed`)."""
    mesh = None
    if devices is not None:
        if by is not None:
            raise ArgumentError("devices= splits one fit over devices; it cannot be combined with by=")
        mesh = make_mesh(resolve_devices(devices))
    if nAGQ != 1:
        raise ArgumentError("nAGQ > 1 (adaptive quadrature) integrates one random-effect term; this formula has "
                            f"{len(spec.terms)}, as lme4 refuses too")
    if by is not None:
        if not isinstance(by, str):
            raise ArgumentError(f"by must be a column name, got {type(by).__name__}")
        if verbose:
            raise ArgumentError("verbose=True reports one optimiser; it is not available with by=")
    first, factors = _evaluate(spec, data, fam, trials=trials, offset=offset, weights=weights, missing=missing, by=by,
                               own=own)
    options = FitOptions(trials=trials, offset=offset, weights=weights, missing=missing)
    fitted = FittedRows(first.X, first.y, first.offset, first.trials, first.weights, first.data.index, None, dtype)
    if by is None:
        n_dropped = int(total(np.array([first.n_dropped]))[0]) if own else first.n_dropped
        return fit_factors(fitted, factors, first.fixef_names, fam, method, formula, options, verbose,
                           n_dropped, mesh=mesh, own=own)
    return _fit_by(first.data[by].to_numpy(), by, fitted, factors, first.fixef_names, fam, method, formula, options,
                  first.n_dropped)


def _evaluate(spec, data, fam, *, trials, offset, weights, missing, by, own=False):
    """The formula on the table, or streamed from a dataset: the first term's rows (fixed
    part, response, options) and every term's :class:`FactorTerm` (codes and levels over all
    rows). ``own``: this process's rows of a dataset, the levels every process's."""
    streamed = is_dataset(data)
    if streamed:
        dataset = open_dataset(data)
        used = used_columns(spec, trials, offset, weights, by)
        names = [c for c in dataset.schema.names if c in used]
    else:
        table = as_pandas(data)
        if len(table) == 0:
            raise DataError("the data have no rows")
        names = list(table.columns)
    columns = [_factor_name(names, term.factor) for term in spec.terms]
    derived = {c: term.factor for term, c in zip(spec.terms, columns) if len(term.factor) > 1}
    specs = [dataclasses.replace(spec, random=term.random, random_text=term.random_text, group=column,
                                 correlated=term.correlated, terms=()) for term, column in zip(spec.terms, columns)]
    if own:
        rows = own_rows(specs, data, [term.factor for term in spec.terms], factors=derived, trials=trials,
                        offset=offset, weights=weights, missing=missing, check_response=fam.check_response)
    elif streamed:
        rows = streamed_rows(specs, dataset, factors=derived, trials=trials, offset=offset, weights=weights,
                             missing=missing, check_response=fam.check_response, by=by)
    else:
        for term in spec.terms:
            for c in term.factor:
                _column(table, c, "grouping")
        table = table.assign(**{c: interaction(table, parts) for c, parts in derived.items()})
        # The first term's rows are checked against every column of the formula, so rows with
        # a missing value anywhere are dropped (or named) once, for every term alike.
        first = _rows_from_formula(specs[0], table, trials=trials, offset=offset, weights=weights, missing=missing,
                                   check_response=fam.check_response, by=by)
        rows = [first] + [_rows_from_formula(one, first.data, missing="raise") for one in specs[1:]]
    factors = []
    for term, one, r in zip(spec.terms, specs, rows):
        levels, codes = unique_inverse(r.groups)
        if own:
            levels, codes = agreed_levels(np.asarray(levels), codes, term.label)
        structure = r.Z.shape[1] if term.correlated else (1,) * r.Z.shape[1]
        factors.append(FactorTerm(term.label, r.re_names, tuple(str(v) for v in np.asarray(levels)), structure,
                                  np.asarray(codes), r.Z, columns=tuple(term.factor), values=np.asarray(levels),
                                  spec=one, encoders=r.encoders))
    return rows[0], factors


def fit_factors(rows: FittedRows, factors, fixef_names, fam, method: str, formula: str, options: FitOptions, verbose,
                n_dropped: int, where: str = "", mesh=None, own: bool = False) -> CrossedResult:
    """The fit of the rows with the terms ``factors`` (``rows.terms`` is planned here);
    ``where`` prefixes the errors (a replicate of ``by=``); ``mesh`` splits the fit over its
    devices; ``own``: the rows are this process's share of a job's (their levels all of them)."""
    count = (lambda v: int(total(np.array([v], np.int64))[0])) if own else (lambda v: v)
    n = count(rows.y.shape[0])
    for f in factors:
        if len(f.levels) < 2:
            raise DataError(f"{where}grouping factor {f.label!r} has a single level; a random effect needs at least "
                            "two groups")
        if len(f.levels) == n and fam.exact:
            raise DataError(f"{where}grouping factor {f.label!r} has one level per row: its variance cannot be told "
                            "apart from the residual variance (lme4 refuses such a model too)")
    order, terms = plan_terms([f.Z.shape[1] for f in factors], [len(f.levels) for f in factors],
                              [f.codes for f in factors], [f.label for f in factors], distinct=distinct if own else None)
    ordered = [factors[k] for k in order]
    rows = dataclasses.replace(rows, terms=terms)
    p = rows.X.shape[1]
    job = Job(mesh) if own else None
    out = _reported(verbose, lambda: estimate(rows, tuple(ordered), fam, method == "REML",
                                              OptOptions(verbose=bool(verbose)), mesh=mesh, job=job))
    cov_natural = None
    if fam.exact:
        sigma, vcov = float(out["sigma"]), np.asarray(out["vcov"])
    else:
        sigma = float(out["dispersion"]) if fam.n_dispersion else None
        # the covariance of φ = (β, the factors' free entries, log dispersion): the inverse
        # Hessian of −ℓ; β's is its first block (as for one term)
        cov_natural = np.linalg.inv(np.asarray(out["hess"]))
        vcov = cov_natural[:p, :p]
    finite = all(np.all(np.isfinite(np.asarray(v))) for v in (out["beta"], vcov, out["loglik"], *out["chols"]))
    # rows of prior weight 0 take no part in the fit (lme4's nobs leaves them out too)
    n_obs = n if rows.weights is None else count(int(np.sum(rows.weights > 0)))
    return CrossedResult(
        formula=formula, method=method, fixef=pd.Series(np.asarray(out["beta"]), index=list(fixef_names)),
        vcov=pd.DataFrame(vcov, index=list(fixef_names), columns=list(fixef_names)),
        sigma=sigma, loglik=float(out["loglik"]), n_obs=n_obs, family=fam.name, link=fam.link,
        n_dropped=n_dropped, terms=tuple(ordered), chols=tuple(np.asarray(c) for c in out["chols"]),
        ranefs=tuple(np.asarray(b) for b in out["ranefs"]),
        cond_vars=tuple(np.asarray(v) for v in out["cond_vars"]), shared=shared_terms(ordered),
        cross_vars=tuple(np.asarray(v) for v in out["cross_vars"]),
        status=Status(int(out["status"])) if finite else Status.NONFINITE, n_iter=int(out["n_iter"]),
        n_eval=int(out["n_eval"]), max_abs_grad=float(np.max(np.abs(out["grad"]))) if np.size(out["grad"]) else 0.0,
        npar=p + sum(n_chol(f.structure) for f in ordered) + (1 if fam.exact else fam.n_dispersion),
        family_spec=fam, fit_options=options, rows=rows, cov_natural=cov_natural,
        n_devices=1 if mesh is None else mesh.size, job=job,
    )


def _reported(verbose, run) -> dict:
    """``run()``'s outputs on the host, its optimiser's iterations reported as ``fit``'s
    ``verbose`` says (:mod:`._progress`)."""
    if verbose:
        _progress.start(None if verbose is True else verbose)
    try:
        return outputs_to_host(run())
    finally:
        _progress.stop()


def _subset(factor, rows: np.ndarray):
    """The term restricted to ``rows``, its levels those present there."""
    present, codes = unique_inverse(factor.codes[rows])
    return dataclasses.replace(factor, levels=tuple(factor.levels[i] for i in present), codes=np.asarray(codes),
                               Z=factor.Z[rows], values=factor.values[present])


def _fit_by(keys, by: str, rows, factors, fixef_names, fam, method, formula, options, n_dropped):
    """One fit per value of ``keys`` (the ``by`` column), one after another through the
    compiled fit: replicates of one shape (the same rows, levels and cells, as a simulation
    study's) share its program. Unlike one-term fits, they are not vmapped into one call."""
    try:
        values, replicate = unique_inverse(keys)
    except TypeError:
        raise DataError(f"by column {by!r} mixes values that cannot be sorted (e.g. numbers and text)") from None
    take = lambda a, mask: None if a is None else a[mask]
    results = []
    for r, key in enumerate(values.tolist()):
        mask = np.flatnonzero(replicate == r)
        where = f"by={by!r} value {key!r}: "
        X = rows.X[mask]
        if np.linalg.matrix_rank(X) < X.shape[1]:
            raise DataError(f"{where}the fixed-effect columns {list(fixef_names)} are rank deficient in its "
                            f"{mask.size} rows")
        sub = dataclasses.replace(rows, X=X, y=rows.y[mask], offset=take(rows.offset, mask),
                                  trials=take(rows.trials, mask), weights=take(rows.weights, mask),
                                  index=rows.index[mask])
        results.append(fit_factors(sub, [_subset(f, mask) for f in factors], fixef_names, fam, method, formula,
                                   options, False, 0, where=where))
    batch = CrossedBatchResult(by=by, keys=tuple(values.tolist()), formula=formula, results=tuple(results),
                               n_dropped=n_dropped)
    converged = batch.converged.to_numpy()
    failed = [k for k, c in zip(batch.keys, converged) if not c]
    if failed:
        warn(f"{len(failed)} of {len(batch)} fits did not converge (by={by!r} values {failed[:5]}"
             f"{' ...' if len(failed) > 5 else ''}); see .converged and .message", ConvergenceWarning)
    n_singular = int(np.sum(batch.singular.to_numpy() & converged))
    if n_singular:
        warn(f"{n_singular} of {len(batch)} fits are boundary (singular) fits: a random-effect variance "
             "is estimated as zero (or a correlation as ±1); see .singular", SingularFitWarning)
    return batch
