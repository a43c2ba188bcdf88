"""A Parquet dataset's record batches as a design's source, without a table of all the rows:
the batches (:func:`batches`), the first pass over them (:func:`scan`: group codes, missing
rows, a sample holding every factor level) and one batch's model columns
(:func:`batch_values`), shared by the one-term design (``_stream_design``) and the rows in
input order of several-term and ``by=`` fits (``_stream_rows``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ._dataset import hash_parts, read_error, release_table
from ._design import _row_arrays
from ._formula_eval import model_frame
from ._formula_nodes import columns_of
from ._grouping import _mixed_groups, unique_inverse
from ._model_matrix import _HEAD_ROWS, for_formulaic
from ._row_numbers import At, renumbered
from ._table import _as_float, _group_column, _response, missing_error, missing_report
from .errors import DataError

BATCH_ROWS = 1 << 20
# A column with more distinct values than this is no factor: its values are not sampled.
_MOST_LEVELS = 100_000


def level_columns(spec, schema) -> list:
    """The columns whose every value the sample must hold: those formulaic may read as a
    factor (a column as it is, or inside ``C()``) that are not floating point."""
    import pyarrow as pa

    named = set()
    for b in spec.bindings:
        if b.kind != "numeric":
            named |= columns_of(b.expr)
    return [c for c in schema.names if c in named and not pa.types.is_floating(schema.field(c).type)]


def batches(dataset, columns, share=None):
    """(table, its rows' dataset row numbers or None) for the dataset's rows as Arrow tables
    of about BATCH_ROWS rows: files written in many small row groups (``partition_dataset``'s
    parts hold one per written batch) are read as large tables, since each table's evaluation
    has a fixed cost (formulaic's, ~4 ms). ``share`` = (group column, process, processes): the
    rows whose group hashes to the process, with their row numbers (otherwise None)."""
    import pyarrow as pa

    pending, numbers, rows, read = [], [], 0, 0
    try:
        # Arrow reads ahead 16 batches of 4 files by default, each held in its pool (0.4 GB
        # at 10M rows); one ahead was as fast here
        for batch in dataset.to_batches(columns=columns, batch_size=BATCH_ROWS, batch_readahead=1,
                                        fragment_readahead=1):
            if share is not None:
                group, process, n_processes = share
                mine = hash_parts(batch.column(group), n_processes) == np.uint64(process)
                numbers.append(np.flatnonzero(mine) + read)
                read += batch.num_rows
                batch = batch.filter(pa.array(mine))
            pending.append(batch)
            rows += batch.num_rows
            if rows >= BATCH_ROWS:
                yield pa.Table.from_batches(pending), np.concatenate(numbers) if share is not None else None
                pending, numbers, rows = [], [], 0
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file of the dataset that cannot be read
        raise read_error(exc) from None
    if pending:
        yield pa.Table.from_batches(pending), np.concatenate(numbers) if share is not None else None


def tables(dataset, columns, share=None, prepare=None, kept=None):
    """(:class:`At`, the table's rows as pandas, indexed by their positions in the table) for
    each batch; ``prepare(table)`` adds derived columns (an interaction's labels), ``kept``
    (sorted positions among the rows read) keeps those rows alone."""
    start = 0
    for batch, numbers in batches(dataset, columns, share):
        table = batch.to_pandas(split_blocks=True, self_destruct=True)
        del batch
        n = len(table)
        table.index = pd.RangeIndex(n)  # positions in the batch (a file's pandas index is not read)
        if prepare is not None:
            table = prepare(table)
        if kept is not None:
            table = table.iloc[kept[np.searchsorted(kept, start):np.searchsorted(kept, start + n)] - start]
        yield At(start, numbers), table
        start += n


class Scanned(NamedTuple):
    """The first pass's findings."""

    labels: list            # per grouping column: its distinct labels, in sorted order
    codes: list             # per grouping column: each kept row's code into them (intp)
    kept: np.ndarray | None  # the dataset rows kept, where some were dropped (missing="drop")
    n_rows: int             # rows read (dropped ones included)
    sample: pd.DataFrame    # the first kept rows and one of every value of the level columns
    seen: dict              # level column -> its values (None past _MOST_LEVELS)
    collected: dict         # column -> its kept rows' values (a by= column)
    arguments: dict         # frame column -> its kept rows' values (stateful transforms' arguments)


def scan(dataset, columns, *, groups, levels, report, missing, share=None, prepare=None, collect=(),
         arrays=None, arguments=None) -> Scanned:
    """The first pass over ``columns`` of the dataset: each grouping column's codes (each
    batch's labels, then all merged), the rows with a missing value in ``report`` or in the
    ``arrays`` (offset=/weights= given as one value per dataset row; ``missing="raise"``
    names them as one table's report would), a sample holding every value of the ``levels``
    columns, and the kept rows' values of ``collect`` and of ``arguments(table)`` (a dict)."""
    seen = {c: set() for c in levels}
    labels, codes = [[] for _ in groups], [[] for _ in groups]
    gathered, argued = {c: [] for c in collect}, {}
    dropped, samples, n_rows, kept_rows = [], [], 0, 0
    unfilled = {} if missing == "raise" else None  # column -> [rows, first rows], over the batches
    table = None
    for at, table in tables(dataset, columns, share, prepare):
        n, start = len(table), at.start
        cut = row_options(arrays or {}, start, table.index)
        drop, found = renumbered(lambda: missing_report(table, report, cut), at, table.index)
        for name, count, first in found if unfilled is not None else ():
            so_far = unfilled.setdefault(name, [0, []])
            so_far[0] += count
            so_far[1] = (so_far[1] + at.data_rows(first).tolist())[:5]
        if drop.any():
            dropped.append(np.flatnonzero(drop) + start)
            table = table.loc[~drop]
        for k, group in enumerate(groups):
            values = _group_column(table, group)
            try:
                batch_labels, batch_codes = unique_inverse(values)
            except TypeError:
                raise DataError(_mixed_groups(values, group)) from None
            labels[k].append(np.asarray(batch_labels))
            codes[k].append(batch_codes.astype(np.int32))  # a batch's codes index its own labels
        for c in collect:
            gathered[c].append(table[c].to_numpy())
        for c, values in (arguments(table) if arguments is not None else {}).items():
            argued.setdefault(c, []).append(values)
        # the sample: the first rows, and a row of every value of each level column when first met
        rows = set(table.index[:max(0, _HEAD_ROWS - kept_rows)])
        for c in levels:
            firsts = None if seen[c] is None else table[c].drop_duplicates()
            if firsts is None or len(seen[c]) + len(firsts) > _MOST_LEVELS:
                seen[c] = None
                continue
            for value, row in zip(firsts.tolist(), firsts.index.tolist()):
                if value not in seen[c]:
                    seen[c].add(value)
                    rows.add(row)
        if rows:
            samples.append(table.loc[sorted(rows)])
        kept_rows += len(table)
        n_rows = start + n
    del table
    release_table()
    if unfilled:  # in the table's order of the columns, whichever batch met them first
        order = [repr(c) for c in report] + ["offset", "weights"]
        raise missing_error([(name, *unfilled[name]) for name in sorted(unfilled, key=order.index)])
    dropped = np.concatenate(dropped) if dropped else np.zeros(0, np.int64)
    if n_rows == dropped.size:
        raise DataError(("the data have no rows" if share is None else f"process {share[1]} of {share[2]} holds no "
                         f"group of {groups[0]!r}: fewer groups than processes, or few parts; use fewer processes")
                        if not n_rows else f"every row has a missing value in the model's columns {report}")
    merged_labels, merged_codes = [], []
    for batch_labels, batch_codes in zip(labels, codes):
        all_labels, where = unique_inverse(np.concatenate(batch_labels))
        bounds = np.cumsum([0] + [lab.size for lab in batch_labels])
        # intp codes, as a table's: the layout's radix order ran slower on int32 codes
        merged_labels.append(all_labels)
        merged_codes.append(np.concatenate([where[bounds[b]:bounds[b + 1]][c] for b, c in enumerate(batch_codes)]))
    return Scanned(merged_labels, merged_codes, np.delete(np.arange(n_rows), dropped) if dropped.size else None,
                   n_rows, pd.concat(samples), seen, {c: np.concatenate(v) for c, v in gathered.items()},
                   {c: np.concatenate(v) for c, v in argued.items()})


def agreed_sample(found: Scanned, levels, schema, agree_levels=None) -> pd.DataFrame:
    """The scan's sample; with ``agree_levels({column: levels})`` (every process's text levels
    of a job's shares, ``_process_fit``), its text level columns as categoricals of them all, so
    that a level another process holds is a category here too."""
    sample = found.sample
    if agree_levels is not None:
        import pyarrow as pa

        text = [c for c in levels if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(
            schema.field(c).type) or pa.types.is_dictionary(schema.field(c).type)]
        agreed = agree_levels({c: sorted(map(str, found.seen[c] or ())) for c in text})
        for c in text:
            sample[c] = pd.Categorical(sample[c].astype(object), categories=agreed[c])
    return sample


def dataset_columns(dataset, wanted, arrays: dict) -> list:
    """The ``wanted`` columns in the dataset's order, all of them present, and the offset= /
    weights= ``arrays`` checked against its rows."""
    names = dataset.schema.names
    absent = sorted(c for c in wanted if c not in names)
    if absent:
        raise DataError(f"column(s) {absent} are not in the dataset (its columns: {names[:20]})")
    aligned_arrays(dataset, arrays)
    return [c for c in names if c in wanted]


def aligned_arrays(dataset, options: dict) -> None:
    """offset= / weights= given as arrays must hold one value per dataset row."""
    n = None
    for role in ("offset", "weights"):
        values = options.get(role)
        if values is None or isinstance(values, str):
            continue
        n = dataset.count_rows() if n is None else n
        if np.shape(values) != (n,):
            raise DataError(f"{role} has shape {np.shape(values)}; expected one value per row ({n})")


def row_options(options: dict, start: int, positions) -> dict:
    """``options`` with offset= / weights= arrays cut to a batch's rows (their positions in
    the batch, which starts at dataset row ``start``)."""
    cut = {k: np.asarray(v)[start + np.asarray(positions)] for k, v in options.items()
           if k in ("offset", "weights") and v is not None and not isinstance(v, str)}
    return {**options, **cut}


def model_columns(spec, enc, table: pd.DataFrame, *, fixed: bool = True):
    """One batch's model matrices with the fit's encodings: (X or None, Z), as float64 arrays."""
    frame = for_formulaic(model_frame(spec, table, enc.levels))
    try:
        X = enc.fixed.get_model_matrix(frame, na_action="raise") if fixed else None
        Z = enc.random.get_model_matrix(frame, na_action="raise")
    except Exception as exc:  # noqa: BLE001 - formulaic raises many types: one clear jaxmm error instead
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot evaluate the model's columns: {spec.display(msg)}") from None
    return (None if X is None else _columns("X", X, enc.fixed_kept)), _columns("Z", Z, Z.columns)


def batch_values(spec, enc, table: pd.DataFrame, options) -> dict:
    """One batch's model columns (with the fit's encodings) and row values, checked."""
    X, Z = model_columns(spec, enc, table)
    y = _as_float(f"response {spec.response!r}", _response(spec, table))
    trials, offset, weights = _row_arrays(spec, table, y, options["trials"], options["offset"], options["weights"],
                                          options["check_response"])
    out = {"X": X, "Z": Z, "y": y}
    out.update({k: v for k, v in (("trials", trials), ("offset", offset), ("weights", weights)) if v is not None})
    return out


def _columns(what: str, frame: pd.DataFrame, names) -> np.ndarray:
    """formulaic's model matrix as one float64 array, filled column by column (pandas'
    conversion of the whole frame interleaves its blocks, several times slower), checked finite."""
    out = np.empty((len(frame), len(names)))
    for j, name in enumerate(names):
        out[:, j] = frame[name].to_numpy(dtype=np.float64)
    return _as_float(what, out)
