"""Where each row and group sits in a design: rows sorted by group, groups in whole tiles,
group-aligned chunks of rows, and sizes rounded up to a ladder so similar data share a
compiled fit.

Memory is O(N·(p+q) + m): per-group quantities come from segment sums over sorted rows,
never from padding groups to a common size.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from ._grouping import _code_order, _is_sorted, _mixed_groups, unique_inverse
from ._types import TILE_ROWS, Layout, LayoutShape, default_chunk_rows
from .errors import DataError


class LayoutPlan(NamedTuple):
    """A layout's shapes, known before its row slots are built (:func:`plan_shapes`), and
    what :func:`layout_slots` needs to build them."""

    shape: LayoutShape
    codes: np.ndarray          # (n,) group code of each input row
    counts: np.ndarray         # (m,) rows of each group
    order: np.ndarray | None   # the rows' stable order by group; None where already sorted
    start: np.ndarray          # (m,) first sorted row of each group
    at: np.ndarray             # (m,) its first row in one unbroken layout
    chunk: np.ndarray          # (m,) the chunk of each group
    rows_per: int
    groups_per: int


def plan_shapes(codes: np.ndarray, m: int, *, bucket: bool = False, chunk_rows: int | None = None,
                size: tuple[int, int] | None = None, min_chunks: int = 1, tile: int = 1) -> LayoutPlan:
    """The shapes of the layout of rows with group ``codes`` in [0, m): rows sorted by group,
    split into group-aligned chunks of about ``chunk_rows`` (default
    :func:`default_chunk_rows`) and padded (see :class:`Layout`).

    ``size=(rows, groups)`` pads a one-chunk layout to that shape (designs stacked for a
    batched fit share it). ``min_chunks`` makes the number of chunks a multiple of it, at
    least that many (one chunk per device of a sharded fit); chunks may be empty.
    ``tile`` > 1 starts every group on a multiple of ``tile`` rows and pads its last tile
    (see :data:`TILE_ROWS`).

    The row slots come after (:func:`layout_slots`): at 10M rows they are a tenth of a
    second of host work, which a fit overlaps with its compilation, started from these
    shapes.
    """
    chunk_rows = default_chunk_rows() if chunk_rows is None else chunk_rows
    counts, order, start, span, at = _spans(codes, m, tile)
    total = int(at[-1] + span[-1])
    round_up = lambda k: -(-k // tile) * tile
    if total <= chunk_rows and min_chunks == 1:
        chunk = np.zeros(m, np.int64)
        rows_per, groups_per, n_chunks = total, m, 1
    else:
        biggest = int(span.max())
        if total > chunk_rows:
            # As few chunks as chunk_rows allows, of equal size: chunks of chunk_rows each
            # padded the last one (10M rows: 3 chunks of 4.19M, 26 % padding rows, each
            # processed by every pass).
            n_target = -(-total // chunk_rows)
            n_target = -(-n_target // min_chunks) * min_chunks
            rows_per = round_up(max(-(-total // n_target) + biggest, 2 * bucket_size(biggest)))
        else:  # split a small design evenly over min_chunks chunks
            rows_per = round_up(-(-total // min_chunks) + biggest)
        chunk, n_chunks, groups_per = _chunks_of(at, rows_per - biggest)
        n_chunks = -(-n_chunks // min_chunks) * min_chunks
    if bucket:
        rows_per, groups_per = round_up(bucket_size(rows_per)), bucket_size(groups_per)
    if size is not None:
        if n_chunks != 1 or size[0] < rows_per or size[1] < groups_per or size[0] % tile:
            raise ValueError(f"size {size} cannot hold a layout of {n_chunks} x ({rows_per}, {groups_per}) "
                             f"in tiles of {tile} rows")
        rows_per, groups_per = size
    shape = LayoutShape(n_chunks * rows_per, n_chunks * groups_per, n_chunks, m)
    return LayoutPlan(shape, codes, counts, order, start, at, chunk, rows_per, groups_per)


def _spans(codes: np.ndarray, m: int, tile: int):
    """(rows of each group, the rows' stable order by group or None where sorted, each
    group's first sorted row, its design rows, its first row in one unbroken layout)."""
    counts = np.bincount(codes, minlength=m)
    order = None if _is_sorted(codes) else _code_order(codes, m)  # keeps the within-group row order
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    span = -(-counts // tile) * tile
    at = np.concatenate([[0], np.cumsum(span)[:-1]])
    return counts, order, start, span, at


def _chunks_of(at: np.ndarray, step: int):
    """(chunk of each group, chunks, most groups in one) where the groups starting in one
    window of ``step`` rows share a chunk: a group starting before k·step + step ends before
    k·step + step + biggest, so each chunk fits in step + biggest rows."""
    chunk = at // step
    n_chunks = int(chunk[-1]) + 1
    used = np.unique(chunk)
    if used.size != n_chunks:  # windows with no group starting in them: close the gaps
        chunk = np.searchsorted(used, chunk)
        n_chunks = used.size
    return chunk, n_chunks, int(np.bincount(chunk).max())


def plan_in_chunks(codes: np.ndarray, m: int, rows_per: int, *, groups_per: int | None = None,
                   n_chunks: int | None = None, tile: int = 1, bucket: bool = False) -> LayoutPlan:
    """A layout in chunks of exactly ``rows_per`` rows, as the processes of a job agree on
    it (each lays out its own groups). ``groups_per`` and ``n_chunks`` fix those too (they
    must hold the groups); where None, as few as the groups need (``bucket`` rounds the
    group slots up as :func:`plan_shapes` does)."""
    counts, order, start, span, at = _spans(codes, m, tile)
    if rows_per % tile or rows_per <= int(span.max()):
        raise ValueError(f"chunks of {rows_per} rows cannot hold groups of up to {int(span.max())} rows "
                         f"in tiles of {tile}")
    chunk, needed, most = _chunks_of(at, rows_per - int(span.max()))
    if groups_per is None:
        groups_per = bucket_size(most) if bucket else most
    n_chunks = needed if n_chunks is None else n_chunks
    if groups_per < most or n_chunks < needed:
        raise ValueError(f"{n_chunks} chunks of {groups_per} groups cannot hold a layout of {needed} x {most}")
    shape = LayoutShape(n_chunks * rows_per, n_chunks * groups_per, n_chunks, m)
    return LayoutPlan(shape, codes, counts, order, start, at, chunk, rows_per, groups_per)


def layout_slots(plan: LayoutPlan) -> Layout:
    """The :class:`Layout` (row and group slots) of a :func:`plan_shapes` plan."""
    n_rows, _, n_chunks, m = plan.shape
    chunk, at, n = plan.chunk, plan.at, plan.codes.size
    first_group = np.searchsorted(chunk, np.arange(n_chunks))
    local_group = np.arange(m) - first_group[chunk]
    group_slot = chunk * plan.groups_per + local_group
    group_row = chunk * plan.rows_per + at - at[first_group[chunk]]  # design row of each group's first row
    # int32 where the layout allows (the device takes int32 indices): half the fresh host
    # memory of int64, whose page faults are much of a large design's host time
    index = np.int32 if n_rows < 2 ** 31 else np.int64
    # In group order, each group's rows shift by one amount: a repeat, not gathers of N rows.
    slot_in_order = np.repeat((group_row - plan.start).astype(index), plan.counts)
    slot_in_order += np.arange(n, dtype=index)
    if plan.order is None:
        row_slot = slot_in_order
    else:
        row_slot = np.empty(n, index)
        row_slot[plan.order] = slot_in_order
    return Layout(row_slot, group_slot, n_rows, plan.shape.n_groups, n_chunks)


def plan_layout(codes: np.ndarray, m: int, **options) -> Layout:
    """:func:`plan_shapes` and :func:`layout_slots` in one (``options`` as the former's)."""
    return layout_slots(plan_shapes(codes, m, **options))


def tile_groups(group_of_row: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(group of each tile, group of each row) from a layout's row groups, where every tile
    starts with a row of its group: the rows padding a group's last tile join that group."""
    tiles = group_of_row[..., ::tile]
    return tiles, np.repeat(tiles, tile, axis=-1)


class GroupPlan(NamedTuple):
    """A design's groups: the distinct labels, each row's code, and the :class:`LayoutPlan`,
    all that the design's shapes depend on."""

    labels: np.ndarray
    codes: np.ndarray
    layout: LayoutPlan


def plan_groups(groups, *, bucket: bool = False, chunk_rows: int | None = None, size=None, min_chunks: int = 1,
                tile: int = TILE_ROWS, group_name: str | None = None) -> GroupPlan:
    """The :class:`GroupPlan` of a grouping column's values, before any other column is
    built; options as :func:`plan_shapes`'s, ``group_name`` names the column in errors."""
    groups = groups if isinstance(groups, pd.api.extensions.ExtensionArray) else np.asarray(groups)
    if pd.isna(groups).any():
        raise DataError(f"groups has {int(pd.isna(groups).sum())} missing value(s)")
    try:
        labels, codes = unique_inverse(groups)
    except TypeError:
        raise DataError(_mixed_groups(groups, group_name)) from None
    layout = plan_shapes(codes, len(labels), bucket=bucket, chunk_rows=chunk_rows, size=size, min_chunks=min_chunks,
                         tile=tile)
    return GroupPlan(labels, codes, layout)


def bucket_size(n: int, minimum: int = 16) -> int:
    """The smallest size ≥ n of the form {4, 5, 6, 7}·2^k (and ≥ minimum).

    Compiled fits are specialised to array shapes. Padding N and m up to these sizes
    means datasets of similar size share one compiled fit, at a cost of at most 25 %
    (on average about 11 %) more rows to process.
    """
    n = max(int(n), minimum)
    k = max(n.bit_length() - 3, 0)
    while True:
        for mant in (4, 5, 6, 7):
            if mant << k >= n:
                return mant << k
        k += 1
