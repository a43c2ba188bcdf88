"""The table edge: any table as pandas, column lookup, numeric checks and missing values."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ._formula import FormulaSpec
from ._formula_eval import column as formula_column, evaluate
from ._formula_nodes import Col
from .errors import DataError


def _as_float(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype == bool:
        arr = arr.astype(float)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{name} must be numeric, got values of type {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)  # no copy of a column that is float64 already
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.reshape(len(arr), -1).any(axis=1))
        raise DataError(
            f"{name} has {rows.size} row(s) with missing or infinite values "
            f"(first rows: {rows[:5].tolist()})"
        )
    return arr


def _column(data: pd.DataFrame, name: str, role: str):
    if name not in data.columns:
        raise DataError(f"{role} column {name!r} is not in the data (columns: {list(data.columns)[:20]})")
    return data[name].to_numpy()


def _group_column(data: pd.DataFrame, name: str):
    """The grouping column's values. A categorical column stays a ``pd.Categorical``, whose
    codes number the groups (see :func:`unique_inverse`); a string column stays pandas'
    string array, which is hashed as it is rather than first built into one Python object
    per row, slow for a large table (docs/performance.md)."""
    if name in data.columns and isinstance(data[name].dtype, (pd.CategoricalDtype, pd.StringDtype)):
        return data[name].array
    return _column(data, name, "grouping")


def as_pandas(data) -> pd.DataFrame:
    """pandas, polars and pyarrow tables (anything with ``to_pandas``), or a dict of columns."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "to_pandas"):  # polars.DataFrame, pyarrow.Table
        try:
            return data.to_pandas()
        except Exception as exc:
            raise DataError(f"cannot convert the {type(data).__name__} table to pandas: {exc}") from None
    try:
        return pd.DataFrame(data)
    except Exception:
        raise DataError(f"data must be a table (pandas, polars or pyarrow, or a dict of columns), "
                        f"got {type(data).__name__}") from None


def _used_columns(spec: FormulaSpec, data: pd.DataFrame, named: dict) -> list[str]:
    """Data columns the model reads: formula variables, grouping factor, named extra columns."""
    for name in sorted(spec.columns - {spec.group}, key=str):
        formula_column(data, name)  # a DataError naming a column the formula reads and the table lacks
    used = spec.columns | {spec.group} | {c for c in named.values() if isinstance(c, str)}
    return [c for c in data.columns if c in used]


def _response(spec: FormulaSpec, data: pd.DataFrame) -> np.ndarray:
    """The response's values: a numeric (or bool) column as it is, or an evaluated expression."""
    node = spec.response_expr
    if isinstance(node, Col):
        values = formula_column(data, node.name)
        if not pd.api.types.is_numeric_dtype(values.dtype) or isinstance(values.dtype, pd.CategoricalDtype):
            raise DataError(f"response {spec.response!r} must be one numeric column; it holds {values.dtype} values")
        return values.to_numpy(dtype=np.float64 if pd.api.types.is_bool_dtype(values.dtype) else None)
    return evaluate(node, data, spec.response)


def _missing_rows(data: pd.DataFrame, columns: list[str], arrays: dict, missing: str):
    """Boolean mask of rows to drop (missing="drop"), or a DataError naming every column with
    missing values (missing="raise")."""
    mask, report = missing_report(data, columns, arrays)
    if report and missing == "raise":
        raise missing_error(report)
    return mask


def missing_report(data: pd.DataFrame, columns: list[str], arrays: dict):
    """(mask of rows with a missing value, [(column, how many, first rows)]); an infinite
    value is a DataError whatever ``missing`` says."""
    mask = np.zeros(len(data), bool)
    report = []
    for col in columns:
        values = data[col]
        plain = values.to_numpy() if isinstance(values.dtype, np.dtype) else None
        if plain is not None and plain.dtype.kind in "iub":
            continue  # numpy integers and bools hold no missing or infinite value
        if plain is not None and plain.dtype.kind == "f" and np.isfinite(plain).all():
            continue  # one pass for the common case; NaN and inf are told apart below
        bad = pd.isna(values).to_numpy()
        if bad.any():
            report.append((repr(col), int(bad.sum()), np.flatnonzero(bad)[:5].tolist()))
            mask |= bad
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            # inf is not "missing": it is an error whatever `missing` says
            inf = np.isinf(values.to_numpy(dtype=float, na_value=0.0))
            if inf.any():
                raise DataError(f"column {col!r} has {int(inf.sum())} infinite value(s) "
                                f"(first rows: {np.flatnonzero(inf)[:5].tolist()})")
    for name, arr in arrays.items():
        if arr is None or isinstance(arr, str):
            continue
        values = np.asarray(arr)
        if values.ndim != 1 or len(values) != len(data):
            continue  # a wrong shape is reported where the array is read
        bad = np.asarray(pd.isna(values))
        if bad.any():
            report.append((name, int(bad.sum()), np.flatnonzero(bad)[:5].tolist()))
            mask |= bad
    return mask, report


def missing_error(report) -> DataError:
    """The DataError of a :func:`missing_report`'s columns (missing="raise")."""
    parts = [f"{name}: {count} row(s) (first rows: {rows[:5]})" for name, count, rows in report]
    return DataError("missing values in " + "; ".join(parts)
                     + ". Remove them, or pass missing=\"drop\" to drop those rows")


def _row_values(data: pd.DataFrame, spec, role: str):
    """offset= / weights=: None, a column name, or one value per row."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return _as_float(f"{role} column {spec!r}", _column(data, spec, role))
    values = _as_float(role, spec)
    if values.shape != (len(data),):
        raise DataError(f"{role} has shape {values.shape}; expected one value per row ({len(data)})")
    return values
