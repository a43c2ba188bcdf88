"""Parquet datasets as a fit's data: only the columns the model uses are read.

``fit(formula, "path/to/dir")`` (a Parquet file, a directory of them, or a
``pyarrow.dataset.Dataset``) reads the formula's columns (and those named by ``trials=``,
``offset=``, ``weights=`` and ``by=``), never the others, record batch by record batch, into
the design (``_stream_design``, ``_stream_rows``): no table of all the rows is built, and the
fit is the in-memory fit of the same rows.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ArgumentError, DataError


def is_dataset(data) -> bool:
    """Whether ``data`` names a Parquet dataset: a path, or a ``pyarrow.dataset.Dataset``."""
    if isinstance(data, (str, os.PathLike)):
        return True
    # a Dataset exists only once its module is imported: a table's fit imports nothing here
    dataset_module = sys.modules.get("pyarrow.dataset")
    return dataset_module is not None and isinstance(data, dataset_module.Dataset)


def _pyarrow_dataset():
    try:
        import pyarrow.dataset as ds
    except ImportError:
        raise ArgumentError('reading a Parquet dataset needs pyarrow: pip install "jaxmm[parquet]"') from None
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
    files = [str(path)] if path.is_file() else _parquet_files(path)
    try:
        return ds.dataset(files, format="parquet", partition_base_dir=None if path.is_file() else str(path))
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors are of several types
        raise DataError(f"cannot read the Parquet dataset {str(path)!r}: {str(exc).splitlines()[0]}") from None


def _parquet_files(folder: Path) -> list:
    """The .parquet/.pq files under a folder, in name order; hidden and ``_``-prefixed entries
    (Spark's _SUCCESS, .crc files) and every other file are left out. None found is an error
    rather than a dataset of nothing."""
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        found += [os.path.join(root, n) for n in sorted(names)
                  if not n.startswith((".", "_")) and n.lower().endswith((".parquet", ".pq"))]
    if not found:
        raise DataError(f"data {str(folder)!r} is a directory with no .parquet or .pq files")
    return found


def used_columns(spec, *named) -> set:
    """The columns a fit reads: the formula's (its grouping factors included) and those named
    by ``trials=``, ``offset=``, ``weights=`` and ``by=``."""
    return set(spec.columns) | {c for c in named if isinstance(c, str)}


def read_error(exc: Exception) -> DataError:
    """The DataError of a dataset file that cannot be read (pyarrow's errors are of several types)."""
    return DataError(f"cannot read the Parquet dataset: {str(exc).splitlines()[0]}")


def release_table() -> None:
    """Return a read table's memory once the design holds its rows. pandas' tables sit in
    reference cycles, which a fit's frozen heap leaves to a later collection, and Arrow's
    pool keeps freed pages for reuse: at 10M rows the two held 0.5 GB through the fit."""
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()


PART_COLUMN = "jaxmm_part"
PARTITION_FILE = "_jaxmm_partition.json"


def partition_dataset(data, group: str, n_parts: int, out):
    """Write a table or a Parquet dataset as a Parquet dataset partitioned by a hash of a
    grouping column, so that every group's rows lie in one part and a process can read the
    parts of its groups alone.

    The rows are streamed a record batch at a time into ``out/jaxmm_part=k/`` (Hive-style
    directories), k = hash(group value) mod ``n_parts``, the hash being pandas'
    ``hash_array`` of the values as stored (the same on every machine and run). The rows of
    one part keep their order. A record of the grouping column and the number of parts
    (``out/_jaxmm_partition.json``) lets each process of a ``jax.distributed`` fit of a model
    grouped by that column read only its own parts (k mod processes = its index).

    Parameters
    ----------
    data : table or path
        A pandas, polars or pyarrow table, or a Parquet dataset (as ``fit`` takes it).
    group : str
        The grouping column.
    n_parts : int
        The number of parts, at least 1.
    out : str or path
        A folder that does not exist yet.

    Returns
    -------
    pathlib.Path
        ``out``, which ``fit`` reads as a dataset.

    Examples
    --------
    >>> import jaxmm, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "cbpp"
    >>> jaxmm.partition_dataset(jaxmm.load_example("cbpp"), "herd", 4, out).name
    'cbpp'
    >>> sorted(p.name for p in out.iterdir())
    ['_jaxmm_partition.json', 'jaxmm_part=0', 'jaxmm_part=1', 'jaxmm_part=2', 'jaxmm_part=3']
    >>> res = jaxmm.fit("incidence ~ C(period) + (1 | herd)", out, family="binomial", trials="size")
    >>> round(res.loglik, 4)
    -92.0263
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not isinstance(n_parts, int) or isinstance(n_parts, bool) or n_parts < 1:
        raise ArgumentError(f"n_parts must be a positive integer, got {n_parts!r}")
    out = Path(out)
    if out.exists():
        raise ArgumentError(f"out {str(out)!r} exists already; partition_dataset writes a new folder")
    if is_dataset(data):
        source = open_dataset(data)
        schema, batches = source.schema, source.to_batches()
    else:
        from ._table import as_pandas

        table = pa.Table.from_pandas(as_pandas(data), preserve_index=False)
        schema, batches = table.schema, table.to_batches()
    if group not in schema.names:
        raise DataError(f"grouping column {group!r} is not in the data (columns: {schema.names[:20]})")
    if PART_COLUMN in schema.names:
        raise DataError(f"the data already hold a column {PART_COLUMN!r}")
    target = schema.append(pa.field(PART_COLUMN, pa.int32()))

    def with_parts():
        for batch in batches:
            part = hash_parts(batch.column(group), n_parts).astype(np.int32)
            yield pa.RecordBatch.from_arrays(batch.columns + [pa.array(part)], schema=target)

    # Row groups of at least 4M / n_parts rows: a part written a batch at a time otherwise
    # holds one small row group per batch, slow to read; the writer then holds about 4M rows.
    ds.write_dataset(with_parts(), str(out), schema=target, format="parquet", partitioning=[PART_COLUMN],
                     partitioning_flavor="hive", use_threads=False, preserve_order=True,
                     min_rows_per_group=max(1024, (1 << 22) // n_parts), max_rows_per_group=1 << 22)
    # what a fit's processes read to take whole parts (the leading _ keeps it out of the data)
    (out / PARTITION_FILE).write_text(json.dumps({"group": group, "n_parts": n_parts}))
    return out


def hash_parts(values, n_parts: int) -> np.ndarray:
    """The part in [0, n_parts) of each value of an Arrow column: pandas' ``hash_array`` of
    the values as stored, the same on every machine and run."""
    values = values.to_pandas()
    raw = values.to_numpy(dtype=object) if values.dtype == object else values.to_numpy()
    return pd.util.hash_array(raw) % np.uint64(n_parts)
