"""From a parsed formula and a table to a :class:`Design` and its :class:`DesignInfo`.

The formula's columns are checked and evaluated on the host (``_table``, ``_model_matrix``,
``_plain_matrix``), the layout is planned from the groups alone (``_layout``), and the rows
are placed (``_place_rows``). Everything after it sees only the arrays.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ._column_stats import aliased_columns, column_scales
from ._formula import FormulaSpec
from ._formula_eval import evaluate, model_frame
from ._formula_nodes import unparse
from ._layout import GroupPlan, plan_groups
from ._model_matrix import _HEAD_ROWS, _factor_levels_of, _head_matrix, _lme4_names, _model_matrix
from ._pages import small_pages
from ._place_rows import _nonnegative_weights, make_design
from ._row_numbers import At, renumbered
from ._plain_matrix import (PlainMatrix, _checked_sources, _levels_of, _plain_gram, _plain_matrix, _plain_terms,
                            _sample_rows)
from ._table import _as_float, _column, _group_column, _missing_rows, _response, _row_values, _used_columns, as_pandas
from ._types import TILE_ROWS, Design, DesignInfo, Encoders, abstract_design
from ._warn import warn
from .errors import DataError, JaxmmWarning


class _Rows(NamedTuple):
    """A formula evaluated on a table: host arrays, one entry per kept input row."""

    X: np.ndarray
    Z: np.ndarray
    y: np.ndarray
    trials: np.ndarray | None
    offset: np.ndarray | None
    weights: np.ndarray | None
    groups: np.ndarray
    fixef_names: tuple
    re_names: tuple
    n_dropped: int
    data: pd.DataFrame  # the table after dropping rows (missing="drop")
    encoders: Encoders


def _rows_from_formula(spec: FormulaSpec, data, *, trials=None, offset=None, weights=None, missing="raise",
                       check_response=None, by=None, defer_plain: bool = False,
                       aliasing: bool = True, state=None) -> _Rows:
    """The formula's host arrays, every row and value checked. ``defer_plain=True`` leaves
    the plain matrices unfilled (:class:`PlainMatrix`), for :func:`make_design` to lay out
    once a fit has started compiling. ``aliasing=False`` keeps every
    column (the caller finds the aliased ones from rows it sees later). ``state``: the
    stateful transforms' state learnt from other rows (``_stream_state``)."""
    data = as_pandas(data)
    if len(data) == 0:
        raise DataError("the data have no rows")
    for name, col in (("trials", trials), ("offset", offset), ("weights", weights), ("by", by)):
        if isinstance(col, str):
            _column(data, col, name)
    used = _used_columns(spec, data, {"trials": trials, "offset": offset, "weights": weights, "by": by})
    _column(data, spec.group, "grouping")
    repeated = sorted({c for c in used if (data.columns == c).sum() > 1}, key=str)
    if repeated:
        raise DataError(f"column(s) {repeated} appear more than once in the data; a model column must be one column")
    drop = _missing_rows(data, used, {"offset": offset, "weights": weights}, missing)
    n_dropped = int(drop.sum())
    if n_dropped:
        keep = ~drop
        data = data.loc[keep]
        offset = offset if offset is None or isinstance(offset, str) else np.asarray(offset)[keep]
        weights = weights if weights is None or isinstance(weights, str) else np.asarray(weights)[keep]
        if len(data) == 0:
            raise DataError(f"every row has a missing value in the model's columns {used}")
    evaluate = lambda: _kept_rows(spec, data, trials, offset, weights, check_response, defer_plain, aliasing, state,
                                  n_dropped)
    # a problem in the kept rows names its row of the table, not its position among them
    return renumbered(evaluate, At(0, np.flatnonzero(~drop)), np.arange(len(data))) if n_dropped else evaluate()


def _kept_rows(spec, data, trials, offset, weights, check_response, defer_plain, aliasing, state,
               n_dropped) -> _Rows:
    """:func:`_rows_from_formula` of the rows kept."""
    groups = _group_column(data, spec.group)
    y = _response(spec, data)
    # formulaic reads only jaxmm's text for the formula (spec.fixed_text, spec.random_text),
    # over the model frame: the table's columns and jaxmm's evaluations of the terms.
    frame = model_frame(spec, data)
    # Formulas of plain terms (_term_source) are evaluated by formulaic on a sample of rows:
    # the first ones and one of each level of every factor. Their matrices are then filled
    # from the frame (below, or on the device: PlainMatrix).
    fixed_terms = random_terms = levels = None
    if len(frame) > _HEAD_ROWS:
        fixed_terms, random_terms = _plain_terms(spec.fixed_text, frame), _plain_terms(spec.random_text, frame)
        levels = _levels_of([*(fixed_terms or ()), *(random_terms or ())], frame)
    if levels is None:
        fixed_terms = random_terms = None
    else:
        rows = _sample_rows(len(frame), levels)
        sample = frame.iloc[rows]
    fixed = None if fixed_terms is None else _head_matrix(spec.fixed_text, sample)
    # x_sources / z_sources: the plain matrices, filled from the frame once everything is
    # checked and the shapes are out (on_columns); X / Z: formulaic's
    X = x_sources = None
    if fixed is not None:
        x_sources = _checked_sources(fixed, frame, rows, levels)
    if x_sources is None:
        fixed = _model_matrix(spec.fixed_text, frame, "fixed-effects formula", spec, state)
    raw_names = list(fixed.columns)
    fixed_names = _lme4_names([spec.display(n) for n in raw_names])
    fixed_spec = fixed.model_spec
    if x_sources is None:
        X = np.asarray(fixed, dtype=np.float64)
    if not aliasing:
        dropped = []
    elif x_sources is None:
        dropped = aliased_columns(X)
    else:
        dropped = aliased_columns(lambda: _plain_matrix(x_sources, frame, levels),
                                  gram=_plain_gram(x_sources, frame, levels))
    del fixed  # formulaic's frames: at 10M rows each held copy is hundreds of MB
    if dropped:
        names = [fixed_names[j] for j in dropped]
        warn(f"fixed-effect model matrix is rank deficient; dropping aliased column(s) {names}",
             JaxmmWarning)
        keep = [j for j in range(len(raw_names)) if j not in dropped]
        fixed_names, raw_names = [fixed_names[j] for j in keep], [raw_names[j] for j in keep]
        if X is None:
            x_sources = [x_sources[j] for j in keep]
        else:
            X = X[:, keep]
    random = None if random_terms is None else _head_matrix(spec.random_text, sample)
    z_sources = None if random is None else _checked_sources(random, frame, rows, levels)
    Z = None
    if z_sources is None:
        random = _model_matrix(spec.random_text, frame, "random-effects term", spec, state)
        Z = np.asarray(random, dtype=np.float64)
    encoders = Encoders(fixed_spec, random.model_spec, tuple(raw_names),
                        {**_factor_levels_of(fixed_spec, frame), **_factor_levels_of(random.model_spec, frame)})
    re_names = tuple(_lme4_names([spec.display(n) for n in random.columns]))
    del random
    trials_arr, offset_arr, weights_arr = _row_arrays(spec, data, y, trials, offset, weights, check_response)
    if pd.isna(groups).any():
        rows = np.flatnonzero(pd.isna(groups))
        raise DataError(f"grouping column {spec.group!r} has {rows.size} missing value(s) (first rows: {rows[:5].tolist()})")
    fill = PlainMatrix if defer_plain else _plain_matrix
    X = fill(x_sources, frame, levels) if X is None else X
    Z = fill(z_sources, frame, levels) if Z is None else Z
    return _Rows(X, Z, y, trials_arr, offset_arr, weights_arr, groups, tuple(fixed_names), re_names, n_dropped, data,
                 encoders)


def _row_arrays(spec: FormulaSpec, data: pd.DataFrame, y, trials, offset, weights, check_response):
    """(trials, offset, weights) of the table's rows, each None where not given, with the
    response checked against the family's support and the weights against negatives."""
    trials_arr = None if trials is None else _as_float(f"trials column {trials!r}", _column(data, trials, "trials"))
    if spec.trials_expr is not None:  # cbind(successes, failures): the trials are their sum
        trials_arr = evaluate(spec.trials_expr, data, f"the trials of {spec.formula.split('~')[0].strip()}")
    offset_arr = _row_values(data, offset, "offset")
    # offset(...) terms in the formula add to offset= (as in R, where all offsets are summed)
    for expr in spec.offsets:
        values = evaluate(expr, data, f"offset({unparse(expr)})")
        offset_arr = values if offset_arr is None else offset_arr + values
    weights_arr = _row_values(data, weights, "weights")
    if check_response is not None:
        problem = check_response(y, 1.0 if trials_arr is None else trials_arr)
        if problem:
            raise DataError(f"response {spec.response!r}: {problem}")
    if weights_arr is not None:
        _nonnegative_weights(weights_arr)  # before a fit starts compiling
    return trials_arr, offset_arr, weights_arr


def _info(spec, rows: _Rows, labels, layout, X, row_index=None) -> DesignInfo:
    return DesignInfo(
        fixef_names=rows.fixef_names,
        re_names=rows.re_names,
        group_name=spec.group,
        group_labels=labels,
        response=spec.response,
        layout=layout,
        n_dropped=rows.n_dropped,
        x_scale=column_scales(X),
        encoders=rows.encoders,
        row_index=rows.data.index if row_index is None else row_index,
    )


class PlannedDesign(NamedTuple):
    """A formula evaluated on a table, checked, with its groups planned: all that the
    design's shapes depend on (:meth:`abstract`), before the rows are placed
    (:func:`place_design`)."""

    spec: FormulaSpec
    rows: _Rows
    groups: GroupPlan

    @property
    def re_names(self) -> tuple:
        return self.rows.re_names

    def abstract(self, dtype, tile: int) -> Design:
        """The design :func:`place_design` builds on the default device, as shapes and dtypes."""
        shape = self.groups.layout.shape
        return abstract_design(shape.n_rows, shape.n_groups, len(self.rows.fixef_names), len(self.rows.re_names),
                               dtype, tile)

    def place(self, *, dtype="float64", host: bool = False, tile: int = TILE_ROWS):
        """:func:`place_design` of this plan."""
        return place_design(self, dtype=dtype, host=host, tile=tile)


@small_pages()
def plan_design(spec: FormulaSpec, data, *, trials=None, offset=None, weights=None, bucket=False, missing="raise",
                check_response=None, min_chunks: int = 1, tile: int = TILE_ROWS,
                chunk_rows: int | None = None) -> PlannedDesign:
    """Evaluate a parsed formula on a table and plan its layout.

    ``missing="raise"`` names every used column with missing values; ``"drop"`` drops
    those rows (their number is ``DesignInfo.n_dropped``). ``check_response(y, trials)``
    returns a problem description or None (a family's support check), run on the host
    arrays. ``bucket``, ``min_chunks``, ``tile`` and ``chunk_rows`` as in
    :func:`_layout.plan_shapes`.
    """
    rows = _rows_from_formula(spec, data, trials=trials, offset=offset, weights=weights, missing=missing,
                              check_response=check_response, defer_plain=True)
    groups = plan_groups(rows.groups, bucket=bucket, chunk_rows=chunk_rows, min_chunks=min_chunks, tile=tile,
                         group_name=spec.group)
    return PlannedDesign(spec, rows, groups)


@small_pages()
def place_design(planned: PlannedDesign, *, dtype="float64", host: bool = False, tile: int = TILE_ROWS):
    """The rows of a :class:`PlannedDesign` placed in a :class:`Design` (on the default
    device; ``host=True`` leaves numpy arrays, for the caller to place, e.g. sharded), and
    its :class:`DesignInfo`. ``tile`` as given to :func:`plan_design`."""
    rows = planned.rows
    design, labels, layout = make_design(rows.X, rows.Z, rows.y, rows.groups, trials=rows.trials, offset=rows.offset,
                                         weights=rows.weights, dtype=dtype, host=host, tile=tile,
                                         plan=planned.groups)
    return design, _info(planned.spec, rows, labels, layout, rows.X)


def design_from_formula(spec: FormulaSpec, data, *, dtype="float64", host: bool = False, tile: int = TILE_ROWS,
                        **options):
    """:func:`plan_design` then :func:`place_design`: (Design, DesignInfo)."""
    return place_design(plan_design(spec, data, tile=tile, **options), dtype=dtype, host=host, tile=tile)
