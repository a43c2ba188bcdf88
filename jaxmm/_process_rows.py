"""Which files of a Parquet dataset one process of a ``jax.distributed`` job reads.

Process p of P takes the groups whose part k (``partition_dataset``'s hash of the grouping
column, mod its number of parts) has k mod P = p. Where the dataset was written by
``partition_dataset`` on the model's grouping column, that is whole files, and a process
opens only its own; otherwise every process reads every batch and keeps the rows whose group
hashes to it (``_stream_design``, ``share=``), holding only its own rows.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ._dataset import PART_COLUMN, PARTITION_FILE, open_dataset
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


def own_parts(data, parts: dict, process: int, n_processes: int):
    """The ``pyarrow.dataset.Dataset`` of this process's parts (k mod processes = process)."""
    import pyarrow.dataset as ds

    files = [f for k in sorted(parts) if k % n_processes == process for f in parts[k]]
    if not files:
        raise DataError(f"process {process} of {n_processes} holds no part of the dataset {str(data)!r} "
                        f"(parts {sorted(parts)}): write it in more parts, or use fewer processes")
    return ds.dataset(files, format="parquet")
