"""The rows of a Parquet dataset that one process of a ``jax.distributed`` job reads: the
rows of its own groups, so that no process holds the whole table.

Process p of P takes the groups whose part k (``partition_dataset``'s hash of the grouping
column, mod its number of parts) has k mod P = p. Where the dataset was written by
``partition_dataset`` on the model's grouping column, that is whole files, and a process
opens only its own; otherwise every process scans the grouping column batch by batch and
keeps the rows of its groups (hash mod P = p), reading the other columns of those batches
too but holding only its own rows.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ._dataset import PART_COLUMN, PARTITION_FILE, hash_parts, open_dataset, read_columns, read_error
from .errors import DataError

_PART_DIR = re.compile(rf"(?:^|/){PART_COLUMN}=(\d+)(?:/|$)")


def hash_partition_files(data, group: str) -> dict | None:
    """part -> its files, where ``data`` is a folder written by ``partition_dataset`` on
    ``group``; None otherwise (a file, a Dataset object, another grouping column)."""
    if not isinstance(data, (str, Path)) or not Path(data).is_dir():
        return None
    meta = Path(data) / PARTITION_FILE
    if not meta.is_file():
        return None
    try:
        written = json.loads(meta.read_text())
    except (OSError, ValueError):
        raise DataError(f"{str(meta)!r} cannot be read as partition_dataset's record of its parts") from None
    if not isinstance(written, dict) or written.get("group") != group:
        return None
    parts: dict[int, list] = {}
    for file in open_dataset(data).files:
        found = _PART_DIR.search(Path(file).relative_to(Path(data)).as_posix())
        if found is None:
            return None  # a file outside the parts: read by filtering instead
        parts.setdefault(int(found.group(1)), []).append(file)
    return parts


def own_rows(data, columns: set, group: str, process: int, n_processes: int) -> pd.DataFrame:
    """The used ``columns`` of the rows of this process's groups, as one pandas table."""
    parts = hash_partition_files(data, group)
    if parts is not None:
        files = [f for k in sorted(parts) if k % n_processes == process for f in parts[k]]
        if not files:
            return _empty(data, columns)
        import pyarrow.dataset as ds

        return read_columns(ds.dataset(files, format="parquet"), columns)
    return _filtered(data, columns, group, process, n_processes)


def _filtered(data, columns: set, group: str, process: int, n_processes: int) -> pd.DataFrame:
    """The rows of this process's groups, found batch by batch by the hash of ``group``."""
    import pyarrow as pa

    dataset = open_dataset(data)
    names = [c for c in dataset.schema.names if c in columns]
    absent = sorted(c for c in columns if c not in dataset.schema.names)
    if absent:
        raise DataError(f"column(s) {absent} are not in the dataset (its columns: {dataset.schema.names[:20]})")
    kept = []
    try:
        for batch in dataset.to_batches(columns=names):
            mine = hash_parts(batch.column(group), n_processes) == np.uint64(process)
            kept.append(batch.filter(pa.array(mine)))
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors are of several types
        raise read_error(exc) from None
    schema = dataset.schema
    table = pa.Table.from_batches(kept, schema=pa.schema([schema.field(c) for c in names]))
    return table.to_pandas(split_blocks=True, self_destruct=True)


def _empty(data, columns: set) -> pd.DataFrame:
    """No rows, with the dataset's types for ``columns`` (a process with no groups)."""
    dataset = open_dataset(data)
    names = [c for c in dataset.schema.names if c in columns]
    return dataset.schema.empty_table().select(names).to_pandas()
