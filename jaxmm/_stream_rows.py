"""The rows of a fit that keeps them in input order (several random-effect terms, ``by=``),
streamed from a Parquet dataset: the host arrays ``_design._rows_from_formula`` gives from a
table, built record batch by record batch without one.

Two passes (``_stream_batches``): the first numbers every term's groups, finds the rows with
missing values and samples a row of every factor level, from which formulaic's encodings
come; the second evaluates each batch with them and writes its rows to the arrays, whose
length is known by then. The aliased fixed-effect columns come from the Gram matrix summed
over the batches.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from ._column_stats import aliased_columns
from ._dataset import release_table, used_columns
from ._design import _Rows, _rows_from_formula
from ._grouping import interaction
from ._pages import small_pages
from ._row_numbers import fitted_index, renumbered
from ._stream_state import argument_columns, arguments_of, learnt_state
from ._stream_batches import (agreed_sample, batch_values, dataset_columns, level_columns, model_columns, row_options,
                              scan, tables)
from ._warn import warn
from .errors import JaxmmWarning


@small_pages()
def streamed_rows(specs, dataset, *, factors: dict, trials=None, offset=None, weights=None, missing="raise",
                  check_response=None, by=None, share=None, agree_levels=None, learn_state=None, total=None,
                  same_columns=None) -> list:
    """One :class:`_design._Rows` per spec, in the dataset's row order less the dropped rows:
    the first spec's with the fixed part, response and options (its ``data`` a table of the
    ``by`` column alone, indexed by the dataset's row numbers), the others' with their term's
    Z, groups (a ``pd.Categorical``), names and encodings. ``factors``: the grouping columns
    that are interactions, {name: columns}, labelled on each batch as a table's fit labels them.

    For one process's share of a job's rows (``_process_crossed``): ``share``,
    ``agree_levels`` and ``learn_state`` as ``_stream_design.plan_streamed``'s, ``total`` the
    sum over the processes (of the Gram matrix that finds the aliased columns), and
    ``same_columns(names)`` raises unless every process's model columns are these; the rows'
    index is then their row numbers in the dataset."""
    first = specs[0]
    arrays = {"offset": offset, "weights": weights}
    columns = dataset_columns(dataset, used_columns(first, trials, offset, weights, by), arrays)
    prepare = None
    if factors:
        prepare = lambda table: table.assign(**{name: interaction(table, parts) for name, parts in factors.items()})
    # the columns a table's fit reports missing values in: the read ones, then the first
    # term's interaction (its grouping column)
    report = columns + [first.group] * (first.group in factors)
    learnt = tuple(sorted({c for s in specs for c in argument_columns(s)}))  # every term's transforms
    levels = level_columns(first, dataset.schema)
    found = scan(dataset, columns, groups=[s.group for s in specs], levels=levels, report=report, missing=missing,
                 share=share, prepare=prepare, collect=[by] if by is not None else [], arrays=arrays,
                 arguments=arguments_of(first, learnt) if learnt else None)
    sample = agreed_sample(found, levels, dataset.schema, agree_levels)
    # the sample gives names and encodings, its transforms' state learnt from all the rows;
    # arrays of offset=/weights= are read with the batches
    state = (learn_state or learnt_state)(specs, found.arguments) if learnt else None
    found = found._replace(arguments={})  # held no longer than the state's learning
    sampled = [_rows_from_formula(specs[0], sample, trials=trials,
                                  offset=offset if isinstance(offset, str) else None,
                                  weights=weights if isinstance(weights, str) else None, aliasing=False, state=state)]
    sampled += [_rows_from_formula(s, sample, aliasing=False, state=state) for s in specs[1:]]
    del sample
    if same_columns is not None:
        same_columns([list(sampled[0].fixef_names)] + [list(r.re_names) for r in sampled])
    n = found.codes[0].size
    options = dict(trials=trials, offset=offset, weights=weights, check_response=check_response)
    given = {"trials": trials is not None or first.trials_expr is not None,
             "offset": offset is not None or bool(first.offsets), "weights": weights is not None}
    p = len(sampled[0].fixef_names)
    # column-major, as a table's matrices are: the statistics' sums then run in the same order
    X, y = np.empty((n, p), order="F"), np.empty(n)
    Zs = [np.empty((n, len(r.re_names)), order="F") for r in sampled]
    extra = {k: np.empty(n) for k, on in given.items() if on}
    gram, done, numbers = np.zeros((p, p)), 0, []
    for at, table in tables(dataset, columns, share, prepare=prepare, kept=found.kept):
        values = renumbered(lambda: batch_values(first, sampled[0].encoders, table,
                                              row_options(options, at.start, table.index)), at, table.index)
        rows = slice(done, done + len(table))
        X[rows], Zs[0][rows], y[rows] = values["X"], values["Z"], values["y"]
        for name, out in extra.items():
            out[rows] = values[name]
        for spec, r, Z in zip(specs[1:], sampled[1:], Zs[1:]):
            Z[rows] = renumbered(lambda: model_columns(spec, r.encoders, table, fixed=False)[1], at, table.index)
        gram += values["X"].T @ values["X"]
        done = rows.stop
        if share is not None:
            numbers.append(at.data_rows(table.index))
    del table, values
    release_table()
    fixef_names, encoders = sampled[0].fixef_names, sampled[0].encoders
    if total is not None:
        gram = total(gram.ravel()).reshape(p, p)
    dropped = aliased_columns(None, gram=gram)
    if dropped:
        warn(f"fixed-effect model matrix is rank deficient; dropping aliased column(s) "
             f"{[fixef_names[j] for j in dropped]}", JaxmmWarning)
        keep = [j for j in range(p) if j not in dropped]
        X, fixef_names = X[:, keep], tuple(fixef_names[j] for j in keep)
        encoders = encoders._replace(fixed_kept=tuple(encoders.fixed_kept[j] for j in keep))
    index = fitted_index(n, found.kept, numbers if share is not None else None)
    data = pd.DataFrame({by: found.collected[by]} if by is not None else {}, index=index)
    n_dropped = found.n_rows - n
    groups = [pd.Categorical.from_codes(codes, categories=pd.Index(labels))
              for codes, labels in zip(found.codes, found.labels)]
    out = [_Rows(X, Zs[0], y, extra.get("trials"), extra.get("offset"), extra.get("weights"), groups[0], fixef_names,
                 sampled[0].re_names, n_dropped, data, encoders)]
    out += [_Rows(None, Z, None, None, None, None, g, (), r.re_names, n_dropped, None, r.encoders)
            for Z, g, r in zip(Zs[1:], groups[1:], sampled[1:])]
    return out
