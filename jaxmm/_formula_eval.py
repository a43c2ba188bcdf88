"""jaxmm's evaluator of formula expressions, and the model frame formulaic reads.

Expressions (``_formula_parse``) are evaluated here with numpy on the table's columns, in
float64: a constant such as ``10**10**8`` is ``inf`` at once, never a big integer, and a
non-finite value of a term is a :class:`DataError` naming it. Nothing is looked up but
table columns and the functions of ``NUMERIC_FUNCTIONS``; there is no other namespace.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._formula_nodes import Bin, Call, Col, Num, Str, Unary, unparse
from ._formula_parse import NUMERIC_FUNCTIONS
from .errors import DataError, FormulaError

_UFUNCS = {name: getattr(np, name) for name in NUMERIC_FUNCTIONS - {"abs", "round"}}
_UFUNCS.update(abs=np.abs, round=np.round)
_ARITHMETIC = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide, "//": np.floor_divide,
               "%": np.mod, "**": np.power}
_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
            "!=": np.not_equal}


class _Text:
    """A column of text or categories: it may be compared with a string, nothing else."""

    def __init__(self, name: str, values: pd.Series):
        self.name, self.values = name, values


def column(data: pd.DataFrame, name: str) -> pd.Series:
    if name not in data.columns:
        raise DataError(f"formula uses {name!r}, which is not a column of the data "
                        f"(columns: {sorted(map(str, data.columns))[:20]})")
    return data[name]


def _is_numeric(values: pd.Series) -> bool:
    dtype = values.dtype
    return pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)


def _value(node, data: pd.DataFrame, where: str):
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Str):
        return node.value
    if isinstance(node, Col):
        values = column(data, node.name)
        if not _is_numeric(values):
            return _Text(node.name, values)
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.to_numpy(dtype=bool)
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(node, Unary):
        v = _number(_value(node.operand, data, where), where)
        return -v if node.op == "-" else v
    if isinstance(node, Bin) and node.op in _COMPARE:
        left, right = _value(node.left, data, where), _value(node.right, data, where)
        text = [isinstance(v, (_Text, str)) for v in (left, right)]
        if any(text):
            if not all(text) or node.op not in ("==", "!=") or isinstance(left, str) == isinstance(right, str):
                raise FormulaError(f"cannot evaluate {where!r}: text compares only with == or != to a string")
            col, s = (left, right) if isinstance(left, _Text) else (right, left)
            equal = (col.values.astype(object) == s).to_numpy(dtype=bool)
            return equal if node.op == "==" else ~equal
        return _COMPARE[node.op](_number(left, where), _number(right, where))
    if isinstance(node, Bin):
        left, right = _number(_value(node.left, data, where), where), _number(_value(node.right, data, where), where)
        return _ARITHMETIC[node.op](left, right)
    if isinstance(node, Call) and node.func == "I":
        return _value(node.args[0], data, where)
    if isinstance(node, Call):
        return _UFUNCS[node.func](_number(_value(node.args[0], data, where), where))
    raise FormulaError(f"cannot evaluate {unparse(node)!r} in {where!r}")  # checked at parse time


def _number(value, where: str):
    if isinstance(value, _Text):
        raise FormulaError(f"cannot evaluate {where!r}: column {value.name!r} holds text or categories, not numbers")
    if isinstance(value, str):
        raise FormulaError(f"cannot evaluate {where!r}: the string {value[:40]!r} is not a number")
    if isinstance(value, np.ndarray) and value.dtype == bool:
        return value.astype(np.float64)
    return np.float64(value) if isinstance(value, bool) else value


def evaluate(node, data: pd.DataFrame, where: str) -> np.ndarray:
    """One float64 value per row of an expression; a DataError names the term where a value is
    missing or infinite (``log`` of a negative number, ``1 / 0``, an overflow)."""
    with np.errstate(all="ignore"):
        value = _number(_value(node, data, where), where)
    value = np.broadcast_to(np.asarray(value, dtype=np.float64), (len(data),))
    bad = ~np.isfinite(value)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"formula term {where!r} gives {rows.size} missing or infinite value(s) "
                        f"(first rows: {rows[:5].tolist()})")
    return value


def _category_key(value):
    return value.item() if isinstance(value, np.generic) else value


def _categorical(binding, data: pd.DataFrame, fit_levels) -> pd.Categorical:
    """The factor of a C(...) term that jaxmm encodes: the levels in C()'s order (levels=[...],
    or the fit's, or the sorted values), the treatment reference first."""
    node, where = binding.expr, binding.display
    if isinstance(node, Col):
        raw = column(data, node.name)
        values = raw.array if isinstance(raw.dtype, pd.CategoricalDtype) else raw.to_numpy()
    else:
        with np.errstate(all="ignore"):
            values = _value(node, data, where)
        values = values.values.to_numpy() if isinstance(values, _Text) else np.broadcast_to(values, (len(data),))
    if fit_levels is not None:
        levels = list(fit_levels)
    elif binding.levels is not None:
        levels = list(binding.levels)
    elif isinstance(values, pd.Categorical):
        levels = list(values.categories)
    else:
        try:
            levels = sorted({_category_key(v) for v in values})
        except TypeError:
            raise DataError(f"C({where}) mixes values that cannot be ordered (e.g. numbers and text); make the "
                            "column one type") from None
    if binding.reference is not None and fit_levels is None:
        if binding.reference not in levels:
            raise FormulaError(f"the reference level {binding.reference!r} is not a level of {where} "
                               f"(levels: {levels[:20]})")
        levels.remove(binding.reference)
        levels.insert(0, binding.reference)
    codes = pd.Index(levels).get_indexer(np.asarray(values, dtype=object))
    if (codes < 0).any():
        unseen = pd.unique(np.asarray(values, dtype=object)[codes < 0]).tolist()
        said = "levels the fit never saw" if fit_levels is not None else "values not listed in levels=[...]"
        raise DataError(f"C({where}) has {said}: {unseen[:10]} (levels: {levels[:20]})")
    return pd.Categorical.from_codes(codes, categories=pd.Index(levels, dtype=object))


def check_levels(name: str, values: pd.Series, levels) -> None:
    """A DataError naming the column and its levels that the fit never saw (predict)."""
    index = pd.Index(list(levels), dtype=object)
    array = np.asarray(values.astype(object) if isinstance(values.dtype, pd.CategoricalDtype) else values,
                       dtype=object)
    unseen = index.get_indexer(array) < 0
    if unseen.any():
        new = pd.unique(array[unseen]).tolist()
        raise DataError(f"newdata: column {name!r} has level(s) the fit never saw: {new[:10]} "
                        f"(the fit's levels: {list(levels)[:20]}); a fixed-effect factor cannot predict an "
                        "unseen level")


def model_frame(spec, data: pd.DataFrame, fit_levels: dict | None = None) -> pd.DataFrame:
    """The columns formulaic reads for ``spec`` (its bindings), evaluated on ``data``.
    ``fit_levels``: frame column -> the fit's levels of each factor, for new data: a value
    outside them is a DataError (formulaic would encode it as the reference level)."""
    fit_levels = fit_levels or {}
    columns = {}
    for b in spec.bindings:
        if b.kind == "column":
            values = column(data, b.expr.name)
            if b.name in fit_levels:
                check_levels(b.expr.name, values, fit_levels[b.name])
            columns[b.name] = values.array if not isinstance(values.dtype, np.dtype) else values.to_numpy()
        elif b.kind == "numeric":
            columns[b.name] = evaluate(b.expr, data, b.display)
        else:
            columns[b.name] = _categorical(b, data, fit_levels.get(b.name))
    return pd.DataFrame(columns, index=data.index, copy=False) if columns else pd.DataFrame(index=data.index)
