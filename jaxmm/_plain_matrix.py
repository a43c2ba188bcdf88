"""Model matrices of plain columns (the intercept, numeric table columns, indicators of a
factor's levels): recognised from formulaic's matrix of a sample of rows, then filled from
the table (or on the device) without formulaic's frames."""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import pandas as pd

from ._column_stats import column_scales
from ._grouping import unique_inverse
from ._model_matrix import _C_OF_COLUMN, _HEAD_ROWS


_NOT_PLAIN = object()


class _Factor(NamedTuple):
    """A formula term that encodes one table column's levels (``f``, ``C(f)``)."""
    column: str


def _is_factor_column(values: pd.Series) -> bool:
    """Whether formulaic encodes a looked-up column by its levels: categories, text, bools."""
    dtype = values.dtype
    return (isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype))
            or (isinstance(dtype, np.dtype) and dtype.kind in "bOU"))


def _term_source(term, data: pd.DataFrame):
    """The table column a formula term copies, None for the intercept, a :class:`_Factor`
    for the levels of one column (indicators, checked in :func:`_plain_sources`), or
    _NOT_PLAIN (a transform, a product, a column of another dtype)."""
    from formulaic.parser.types import Factor

    if len(term.factors) != 1:
        return _NOT_PLAIN
    factor = term.factors[0]
    if factor.eval_method is Factor.EvalMethod.LITERAL and factor.expr == "1":
        return None
    if factor.eval_method is Factor.EvalMethod.LOOKUP and factor.expr in data.columns:
        values = data[factor.expr]
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf":
            return factor.expr
        return _Factor(factor.expr) if _is_factor_column(values) else _NOT_PLAIN
    if factor.eval_method is Factor.EvalMethod.PYTHON:
        named = _C_OF_COLUMN.match(factor.expr)
        if named and named.group(1) in data.columns:
            return _Factor(named.group(1))
    return _NOT_PLAIN


def _plain_terms(formula: str, data: pd.DataFrame) -> list | None:
    """The columns of the plain terms (:func:`_term_source`) of a formula (both sides), from
    the parsed formula alone, or None where a term is not plain: only plain formulas are
    evaluated on a few rows, so the others pay formulaic once."""
    from formulaic import Formula

    try:
        parsed = Formula(formula)
    except Exception:  # noqa: BLE001 - formulaic's own evaluation reports it
        return None
    sides = [parsed.lhs, parsed.rhs] if hasattr(parsed, "rhs") else [parsed]
    sources = [_term_source(term, data) for side in sides for term in side]
    return None if any(source is _NOT_PLAIN for source in sources) else sources


def _factor_levels(values):
    """(labels, code of each row) of a factor column: a categorical's categories, every one
    of them (formulaic encodes unused ones too), or the sorted distinct values."""
    if isinstance(values, pd.Categorical):
        return np.asarray(values.categories), values.codes
    return unique_inverse(values)


def _levels_of(sources, data: pd.DataFrame) -> dict | None:
    """column -> (labels, codes) of the factor columns among ``sources``; None where a
    column's values cannot be ordered (formulaic then evaluates the table and reports it)."""
    levels = {}
    for source in sources:
        if isinstance(source, _Factor) and source.column not in levels:
            values = data[source.column]
            pandas_array = isinstance(values.dtype, (pd.CategoricalDtype, pd.StringDtype))
            try:
                levels[source.column] = _factor_levels(values.array if pandas_array else values.to_numpy())
            except TypeError:
                return None
    return levels


def _sample_rows(n: int, levels: dict) -> np.ndarray:
    """The first rows of the table and one row of every level of each factor: formulaic's
    matrix of these rows has the whole table's columns, and shows each one's encoding."""
    rows = [np.arange(min(n, _HEAD_ROWS))]
    for labels, codes in levels.values():
        one = np.zeros(len(labels), np.intp)  # a category no row holds keeps row 0
        one[codes] = np.arange(codes.size)
        rows.append(one)
    return np.unique(np.concatenate(rows))


def _plain_sources(matrix, data: pd.DataFrame, levels: dict | None = None, rows: np.ndarray | None = None):
    """The source of each column of a formulaic model matrix of the table's ``rows`` (all
    when None): None for the intercept, a numeric column's name, or (column, level) for the
    indicator of one level of a factor column (``levels``: :func:`_levels_of`). None when
    any column is something else, e.g. a contrast other than treatment (dummy) coding."""
    spec = matrix.model_spec
    names = list(matrix.columns)
    sources = []
    for term in spec.terms:
        source = _term_source(term, data)
        span = spec.term_slices[term]
        if source is _NOT_PLAIN:
            return None
        if not isinstance(source, _Factor):
            if names[span] != ["Intercept" if source is None else source]:
                return None
            sources.append(source)
            continue
        if levels is None or source.column not in levels:
            return None
        labels, codes = levels[source.column]
        codes = codes if rows is None else codes[rows]
        values = np.asarray(matrix, dtype=np.float64)[:, span]
        for j in range(values.shape[1]):
            ones = values[:, j] == 1.0
            held = np.unique(codes[ones])
            if held.size != 1 or not np.all(ones | (values[:, j] == 0.0)) or not np.array_equal(codes == held[0], ones):
                return None
            sources.append((source.column, labels[held[0]]))
    return sources if len(sources) == len(names) else None


def _plain_matrix(sources: list, data: pd.DataFrame, levels: dict | None = None) -> np.ndarray:
    """The model matrix of ``sources`` (:func:`_plain_sources`), filled on the host."""
    return np.asarray(PlainMatrix(sources, data, levels))


class PlainMatrix:
    """A model matrix whose columns are the intercept (None in ``sources``), numeric columns
    of the table (a name) or indicators of one level of a factor column ((name, level)), not
    yet filled. ``columns``: name -> values of the numeric columns; ``codes``: name -> the
    level code of each row of the factor columns; ``layout_sources``: the sources with each
    level as its code.

    ``np.asarray`` fills it on the host. A design laid out on the device builds it there
    from the distinct table columns instead (``_lay_out``): at 10M rows and X = [1, x1, x2],
    Z = [1, x1] that moves 2 columns to the device instead of 5, with no host fill, and a
    factor of 10 levels moves as one column of 1-byte codes instead of 9 of floats.
    """

    ndim = 2

    def __init__(self, sources, data: pd.DataFrame, levels: dict | None = None):
        self.sources = tuple(sources)
        factors = [s for s in self.sources if isinstance(s, tuple)]
        levels = levels if levels is not None else _levels_of([_Factor(s[0]) for s in factors], data)
        self.columns = {name: data[name].to_numpy() for name in self.sources if isinstance(name, str)}
        self.codes, code_of = {}, {}
        for name in dict.fromkeys(s[0] for s in factors):
            labels, codes = levels[name]
            kind = np.int8 if len(labels) <= 127 else np.int16 if len(labels) <= 32767 else np.int32
            self.codes[name] = codes.astype(kind, copy=False)
            code_of[name] = {label: i for i, label in enumerate(labels.tolist())}
        self.layout_sources = tuple((s[0], code_of[s[0]][_python(s[1])]) if isinstance(s, tuple) else s
                                    for s in self.sources)
        self.shape = (len(data), len(self.sources))

    def _column(self, source):
        if source is None:
            return 1.0
        if isinstance(source, tuple):
            return self.codes[source[0]] == source[1]
        return self.columns[source]

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape[::-1]).T  # column-major, as formulaic's frames convert
        for j, source in enumerate(self.layout_sources):
            out[:, j] = self._column(source)
        return out if dtype is None else out.astype(dtype, copy=False)

    def scales(self, rows: int = 1 << 18) -> tuple:
        """:func:`column_scales`, one table column at a time."""
        n = self.shape[0]
        out = []
        for source in self.layout_sources:
            if source is None:
                out.append(1.0)
            elif isinstance(source, tuple):
                share = np.count_nonzero(self._column(source)) / n if n else 0.0
                sd = np.sqrt(share * (1.0 - share))
                out.append(float(sd) if sd > 0 else 1.0)
            else:
                out.append(column_scales(np.asarray(self.columns[source], dtype=np.float64)[:, None], rows)[0])
        return tuple(out)

    def gram(self) -> np.ndarray:
        """XᵀX, from the table's columns and the level counts, without the matrix."""
        n, sources = self.shape[0], self.layout_sources
        numeric = {name: np.asarray(values, dtype=np.float64) for name, values in self.columns.items()}
        sizes = {name: int(codes.max(initial=-1)) + 1 for name, codes in self.codes.items()}
        counts = {name: np.bincount(codes, minlength=sizes[name]) for name, codes in self.codes.items()}
        sums = functools.cache(lambda factor, name: np.bincount(self.codes[factor], weights=numeric[name],
                                                                minlength=sizes[factor]))

        def joint(a, b):
            return np.bincount(self.codes[a].astype(np.int64) * sizes[b] + self.codes[b],
                               minlength=sizes[a] * sizes[b]).reshape(sizes[a], sizes[b])

        joint = functools.cache(joint)
        gram = np.empty((len(sources), len(sources)))
        for i, a in enumerate(sources):
            for j, b in enumerate(sources[:i + 1]):
                if a is None and b is None:
                    value = float(n)
                elif a is None or b is None:
                    c = b if a is None else a
                    value = counts[c[0]][c[1]] if isinstance(c, tuple) else numeric[c].sum()
                elif isinstance(a, tuple) and isinstance(b, tuple):
                    if a[0] == b[0]:
                        value = counts[a[0]][a[1]] if a[1] == b[1] else 0.0
                    else:
                        value = joint(a[0], b[0])[a[1], b[1]]
                elif isinstance(a, tuple) or isinstance(b, tuple):
                    f, x = (a, b) if isinstance(a, tuple) else (b, a)
                    value = sums(f[0], x)[f[1]]
                else:
                    value = numeric[a] @ numeric[b]
                gram[i, j] = gram[j, i] = value
        return gram


def _python(value):
    """A numpy scalar as the Python value ``tolist`` gives (the key of a level's code)."""
    return value.item() if isinstance(value, np.generic) else value


def _checked_sources(matrix, data: pd.DataFrame, rows: np.ndarray, levels: dict) -> list | None:
    """:func:`_plain_sources` of formulaic's matrix of the table's ``rows``, where filling
    those rows gives formulaic's values; None otherwise (formulaic then evaluates the table)."""
    sources = None if matrix is None else _plain_sources(matrix, data, levels, rows)
    if sources is None:
        return None
    sample = data.iloc[rows]
    sample_levels = {name: (labels, codes[rows]) for name, (labels, codes) in levels.items()}
    if not np.array_equal(_plain_matrix(sources, sample, sample_levels), np.asarray(matrix, dtype=np.float64)):
        return None
    return sources


def _plain_gram(sources: list, data: pd.DataFrame, levels: dict | None = None) -> np.ndarray:
    """XᵀX of the matrix of ``sources`` from the table's columns, without building it."""
    return PlainMatrix(sources, data, levels).gram()
