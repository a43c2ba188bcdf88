"""Group codes: the distinct labels of a column (or of an interaction of columns) and each
row's code, and stable orders of codes, with fast paths for the layouts tables usually have
(sorted, small integer ids)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._table import _column


def _is_sorted(a: np.ndarray) -> bool:
    return a.size < 2 or bool(np.all(a[1:] >= a[:-1]))


def _code_order(codes: np.ndarray, m: int) -> np.ndarray:
    """``np.argsort(codes, kind="stable")`` for integer codes in [0, m), by radix passes of
    16 bits: numpy sorts 16-bit keys stably by radix, in linear time, where 64-bit keys take
    a merge sort (docs/performance.md)."""
    if m > 1 << 32:
        return np.argsort(codes, kind="stable")
    order = np.argsort(codes.astype(np.uint16), kind="stable")  # the low 16 bits (the cast wraps)
    if m > 1 << 16:  # least significant digit first: the second stable pass keeps the first's order
        high = (codes >> 16).astype(np.uint16)
        order = order[np.argsort(high[order], kind="stable")]
    return order


def stable_order(codes: np.ndarray) -> np.ndarray:
    """The stable sort order of non-negative integer codes; data already sorted (the usual
    layout of a long table) skip the sort, which is a quarter of the host work at 10M rows."""
    if _is_sorted(codes):
        return np.arange(codes.size)
    return _code_order(codes, int(codes.max()) + 1)


def unique_inverse(values: np.ndarray):
    """``np.unique(values, return_inverse=True)``, in one pass when numeric values are
    already sorted (replicates and groups in order, as simulation studies write them).

    ``values`` may also be a ``pd.Categorical`` (a grouping column of category dtype),
    which is taken as the values it holds, without building them row by row, or another
    pandas array (strings), which is hashed as it is."""
    if isinstance(values, pd.Categorical):
        if values.size == 0 or (values.codes < 0).any():  # missing values: np.unique's behaviour
            return unique_inverse(np.asarray(values))
        # The categories present, from the integer codes; then ordered by value, as np.unique
        # orders them, rather than building and hashing the values row by row (docs/performance.md).
        present, inverse = unique_inverse(values.codes.astype(np.int64))
        return _by_value(np.asarray(values.categories)[present], inverse)
    if isinstance(values, pd.api.extensions.ExtensionArray):
        values = values if isinstance(values.dtype, pd.StringDtype) else np.asarray(values)
    elif values.dtype.kind in "biuf" and _is_sorted(values):
        new = np.empty(values.size, bool)
        new[:1] = True
        np.not_equal(values[1:], values[:-1], out=new[1:])
        starts = np.flatnonzero(new)
        return values[starts], np.repeat(np.arange(starts.size), np.diff(np.append(starts, values.size)))
    if values.dtype.kind in "iu" and values.size:
        # Integers over a range not much wider than the data (group ids, as tables number
        # them): a table of the values present, faster than the hash below (docs/performance.md).
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < 2 * values.size and -(2 ** 62) < lo and hi < 2 ** 62:
            # ids counted from 0 or 1 index the table as they are (no shifted copy)
            base = 0 if 0 <= lo and hi < 2 * values.size else lo
            offset = values.astype(np.intp, copy=False)
            if base:
                offset = offset - base
            present = np.bincount(offset, minlength=hi - base + 1) > 0
            rank = np.cumsum(present) - 1
            return (np.flatnonzero(present) + base).astype(values.dtype), rank[offset]
    # Hash the values, then sort only the distinct ones: np.unique sorts all N values
    # (docs/performance.md). Values that cannot be ordered raise TypeError from the sort, as
    # np.unique does.
    codes, uniques = pd.factorize(values, sort=False)
    if codes.size and codes.min() < 0:  # missing values: np.unique's behaviour
        uniques, inverse = np.unique(np.asarray(values), return_inverse=True)
        return uniques, inverse.ravel()
    return _by_value(np.asarray(uniques), codes)


def _mixed_groups(groups, name: str | None = None) -> str:
    kinds = sorted({type(v).__name__ for v in pd.unique(np.asarray(groups, dtype=object))[:10_000]})
    col = "the grouping column" if name is None else f"grouping column {name!r}"
    return (f"{col} mixes values of types {kinds} that cannot be ordered (e.g. numbers and text); make it one "
            "type, e.g. data[column].astype(str)")


def _by_value(labels: np.ndarray, codes: np.ndarray):
    """Distinct ``labels`` and the rows' ``codes`` into them, renumbered with the labels in
    sorted order (np.unique's)."""
    order = _value_order(labels)
    rank = np.empty(order.size, np.int64)
    rank[order] = np.arange(order.size)
    return labels[order], rank[codes]


# Bytes of fixed-width text that _value_order may make to sort distinct strings in C.
_TEXT_SORT_BYTES = 1 << 28


def _value_order(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")``. Python strings in an object array are compared
    one pair at a time through Python; as fixed-width numpy text they compare in C, in the
    same code-point order (docs/performance.md).

    numpy's text drops trailing NULs, so strings ending in one keep the object sort, as do
    arrays that would make too much text."""
    if values.dtype == object and values.size > 1 and pd.api.types.infer_dtype(values, skipna=False) == "string":
        lengths = np.fromiter(map(len, values), np.int64, values.size)
        if values.size * int(lengths.max()) * 4 <= _TEXT_SORT_BYTES:
            text = values.astype(str)
            if np.array_equal(np.char.str_len(text), lengths):
                return np.argsort(text, kind="stable")
    return np.argsort(values, kind="stable")


def interaction(data: pd.DataFrame, factor: tuple) -> pd.Series:
    """The combinations of the factor's columns as text ("a1:b2"), missing where any part is."""
    parts = [pd.Series(_column(data, c, "grouping"), index=data.index) for c in factor]
    missing = np.logical_or.reduce([pd.isna(p).to_numpy() for p in parts])
    text = parts[0].astype(str)
    for p in parts[1:]:
        text = text + ":" + p.astype(str)
    return text.where(~missing, None)


def factor_keys(data: pd.DataFrame, factor: tuple) -> np.ndarray:
    """Each row's level of the factor, as the fit's levels are spelled (new data)."""
    if len(factor) == 1:
        return np.asarray(_column(data, factor[0], "grouping"))
    return interaction(data, factor).to_numpy(dtype=object)
