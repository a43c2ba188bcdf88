"""Parquet datasets as a fit's data: only the columns the model uses are read.

``fit(formula, "path/to/dir")`` (a Parquet file, a directory of them, or a
``pyarrow.dataset.Dataset``) reads the formula's columns (and those named by ``trials=``,
``offset=``, ``weights=`` and ``by=``), never the others, record batch by record batch, into
one pandas table of those columns for the design builder: the table ``pandas.read_parquet``
would give for them, so the fit is the in-memory fit of the same rows. The design itself is
still built in memory from that table (streaming it into the design is not built).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .errors import ArgumentError, DataError


def is_dataset(data) -> bool:
    """Whether ``data`` names a Parquet dataset: a path, or a ``pyarrow.dataset.Dataset``."""
    if isinstance(data, (str, os.PathLike)):
        return True
    dataset_module = _pyarrow_dataset(required=False)
    return dataset_module is not None and isinstance(data, dataset_module.Dataset)


def _pyarrow_dataset(required: bool = True):
    try:
        import pyarrow.dataset as ds
    except ImportError:
        if required:
            raise ArgumentError('reading a Parquet dataset needs pyarrow: pip install "jaxmm[parquet]"') from None
        return None
    return ds


def open_dataset(data):
    """The ``pyarrow.dataset.Dataset`` of a path (a Parquet file or a directory of them)."""
    ds = _pyarrow_dataset()
    if isinstance(data, ds.Dataset):
        return data
    path = Path(data)
    if not path.exists():
        raise DataError(f"data {str(path)!r} is neither a table nor an existing Parquet file or directory")
    if path.is_file() and path.suffix.lower() not in (".parquet", ".pq"):
        raise DataError(f"data {str(path)!r} is a file but not Parquet (.parquet/.pq); read other formats "
                        "into a table first")
    try:
        return ds.dataset(str(path), format="parquet")
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors are of several types
        raise DataError(f"cannot read the Parquet dataset {str(path)!r}: {str(exc).splitlines()[0]}") from None


def used_columns(spec, *named) -> set:
    """The columns a fit reads: the formula's (its grouping factors included) and those named
    by ``trials=``, ``offset=``, ``weights=`` and ``by=``."""
    return set(spec.columns) | {c for c in named if isinstance(c, str)}


def read_columns(data, columns: set) -> pd.DataFrame:
    """The dataset's ``columns`` (in the dataset's order) as one pandas table. Arrow's scanner
    reads only those columns, a record batch at a time; the conversion frees each Arrow column
    as it is converted (``self_destruct``), and text stays Arrow-backed strings, which the
    design builder numbers without making a Python object per row."""
    dataset = open_dataset(data)
    names = dataset.schema.names
    absent = sorted(c for c in columns if c not in names)
    if absent:
        raise DataError(f"column(s) {absent} are not in the dataset (its columns: {names[:20]})")
    try:
        table = dataset.to_table(columns=[c for c in names if c in columns])
    except Exception as exc:  # noqa: BLE001 - a file of the dataset that cannot be read
        raise DataError(f"cannot read the Parquet dataset: {str(exc).splitlines()[0]}") from None
    return table.to_pandas(split_blocks=True, self_destruct=True)
