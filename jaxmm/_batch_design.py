"""by= designs: one design per value of a column, padded to a common shape and stacked,
for fits vmapped over the replicates."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._dataset import is_dataset, open_dataset
from ._design import _info, _rows_from_formula
from ._formula import FormulaSpec
from ._grouping import _is_sorted, _mixed_groups, stable_order, unique_inverse
from ._layout import bucket_size, tile_groups
from ._pages import small_pages
from ._place_rows import _FILLS, _row_columns, to_device
from ._stream_rows import streamed_rows
from ._types import AUTODIFF_CHUNK_ROWS, TILE_ROWS, Design, Layout
from .errors import ArgumentError, DataError


@small_pages()
def designs_by(spec: FormulaSpec, data, by: str, *, trials=None, offset=None, weights=None, dtype="float64",
               bucket=False, missing="raise", check_response=None, tile: int = TILE_ROWS):
    """One design per value of the column ``by``, padded to a common shape and stacked.
    ``tile`` as in :func:`plan_layout`.

    Returns (Design with a leading replicate axis, [DesignInfo per replicate], by values,
    number of rows dropped for missing values).
    The formula is evaluated once on the whole table (or streamed once from a dataset), so
    every replicate has the same fixed-effect columns (factor levels included).
    """
    if is_dataset(data):  # the rows streamed from the dataset, without a table
        rows = streamed_rows([spec], open_dataset(data), factors={}, trials=trials, offset=offset, weights=weights,
                             missing=missing, check_response=check_response, by=by)[0]
    else:
        rows = _rows_from_formula(spec, data, trials=trials, offset=offset, weights=weights, missing=missing,
                                  check_response=check_response, by=by)
    keys = rows.data[by].to_numpy()
    try:
        values, codes = unique_inverse(keys)
    except TypeError:
        raise DataError(f"by column {by!r} mixes values that cannot be sorted (e.g. numbers and text)") from None
    n_rep = len(values)
    n_rows = np.bincount(codes, minlength=n_rep)
    largest = int(n_rows.max())
    if largest > AUTODIFF_CHUNK_ROWS:
        raise ArgumentError(f"by={by!r}: a replicate has {largest} rows; a batched fit takes at most "
                            f"{AUTODIFF_CHUNK_ROWS} rows per replicate (fit larger ones one at a time)")
    # Every replicate at once (a loop over thousands of replicates costs more than the fit):
    # a (replicate, group) pair per row, pairs sorted by replicate then group label.
    try:
        labels, gcode = unique_inverse(rows.groups)
    except TypeError:
        raise DataError(_mixed_groups(rows.groups, spec.group)) from None
    pair_of_row = codes.astype(np.int64) * len(labels) + gcode.ravel()
    # Rows already in replicate-then-group order (as simulation studies write them) need no
    # sort, and their positions follow from the row number.
    in_order = _is_sorted(pair_of_row)
    pairs, pair = unique_inverse(pair_of_row)
    pair_rep, pair_label = pairs // len(labels), pairs % len(labels)
    n_groups = np.bincount(pair_rep, minlength=n_rep)
    single = [v for v, k in zip(values.tolist(), n_groups) if k < 2]
    if single:
        raise DataError(f"by={by!r}: the grouping factor {spec.group!r} has a single level in the replicate(s) "
                        f"{single[:5]}; a random effect needs at least two groups")
    first_pair = np.concatenate([[0], np.cumsum(n_groups)[:-1]])
    # Each (replicate, group) pair starts on a tile boundary of its replicate's rows.
    pair_rows = np.bincount(pair, minlength=len(pairs))
    pair_span = -(-pair_rows // tile) * tile
    pair_at = np.cumsum(pair_span) - pair_span
    pair_at -= pair_at[first_pair[pair_rep]]  # from the start of its replicate
    rep_rows = np.bincount(pair_rep, weights=pair_span, minlength=n_rep).astype(np.int64)
    pair_first_row = np.concatenate([[0], np.cumsum(pair_rows)[:-1]])
    size = (int(rep_rows.max()), int(n_groups.max()))
    if bucket:
        size = (bucket_size(size[0]), bucket_size(size[1]))
    if rows.weights is not None and (rows.weights < 0).any():
        bad = np.flatnonzero(rows.weights < 0)
        raise DataError(f"weights has {bad.size} negative value(s) (first rows: {bad[:5].tolist()})")
    # Regular: rows in order, no tile padding and replicates of equal size n (as simulation
    # studies write them). Each replicate's rows are then the next n rows, so the padded
    # arrays are the columns reshaped, with padding after them; no scatter.
    n_regular = int(rep_rows[0]) if (in_order and np.all(pair_span == pair_rows)
                                     and np.all(rep_rows == rep_rows[0])) else None
    # A group's position within its replicate; where every replicate has every group, its label's.
    row_group = gcode.ravel() if np.all(n_groups == len(labels)) else pair - first_pair[codes]
    if n_regular is not None:
        slot = None  # row i of replicate r is at i - r·n; see info()
    else:
        order = np.arange(codes.size) if in_order else stable_order(pair)  # by replicate, then group, then input order
        slot = np.empty(codes.size, np.int64)
        slot[order] = pair_at[pair[order]] + np.arange(codes.size) - pair_first_row[pair[order]]

    def place(values_, fill, kind=dtype):
        shape = (n_rep, size[0]) + np.shape(values_)[1:]
        out = np.full(shape, fill, np.dtype(kind))
        if n_regular is not None:
            out[:, :n_regular] = values_ if np.ndim(values_) == 0 else np.reshape(values_, (n_rep, n_regular) + shape[2:])
        else:
            out[codes, slot] = values_
        return out

    constants = {}

    def on_device(values_, fill):
        if np.ndim(values_) == 0 and (values_ == fill or n_regular == size[0]):  # the same in every row
            if values_ not in constants:  # one array per value: immutable, so columns can share it
                constants[values_] = to_device(np.full((n_rep, size[0]), values_, np.dtype(dtype)))
            return constants[values_]
        return to_device(place(values_, fill))

    group = place(row_group, size[1] - 1, np.int32)  # padding rows: the last (empty) slot
    tile_group = None
    if tile > 1:
        tile_group, group = tile_groups(group, tile)
    counts = np.zeros((n_rep, size[1]))
    counts[pair_rep, np.arange(len(pairs)) - first_pair[pair_rep]] = pair_rows
    given = _row_columns(rows.X, rows.Z, rows.y, rows.trials, rows.offset, rows.weights)
    stacked = Design(
        **{name: on_device(values, _FILLS[name]) for name, values in given.items()},
        group=to_device(group), counts=to_device(counts, dtype),
        tile_group=None if tile_group is None else to_device(tile_group),
    )
    # Each replicate's rows, for its DesignInfo (built lazily): positions in ``by_rep``.
    by_rep = stable_order(codes)
    rep_start = np.concatenate([[0], np.cumsum(n_rows)])

    def info(r):
        idx, m = by_rep[rep_start[r]:rep_start[r + 1]], int(n_groups[r])
        layout = Layout(np.arange(idx.size) if slot is None else slot[idx], np.arange(m), size[0], size[1], 1)
        group_labels = tuple(labels[pair_label[first_pair[r]:first_pair[r] + m]].tolist())
        return _info(spec, rows._replace(n_dropped=0), group_labels, layout, rows.X[idx],
                     row_index=rows.data.index[idx])

    return stacked, _LazyInfos(info, n_rep, n_rows), values.tolist(), rows.n_dropped


class _LazyInfos(Sequence):
    """The :class:`DesignInfo` of each replicate of a batched design, built when first read.

    A batch result reads them for the replicates a user looks at (``res[value]``), and a
    gaussian batch never needs the others: building all of them was a Python loop of
    about 0.1 s per 1000 replicates, a fifth of a warm 1000-replicate by= fit.
    """

    def __init__(self, build, n: int, n_rows: np.ndarray):
        self._build, self._n, self._cache = build, n, {}
        self.n_rows = n_rows  # rows of each replicate

    def __len__(self):
        return self._n

    def __getitem__(self, r):
        if isinstance(r, slice):
            return [self[k] for k in range(*r.indices(self._n))]
        r = range(self._n)[r]
        if r not in self._cache:
            self._cache[r] = self._build(r)
        return self._cache[r]
