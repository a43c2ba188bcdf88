"""From a table (or raw arrays) to the arrays-only design pytree the engine consumes.

This is the pandas/formulaic edge of the package. Everything after it sees only
:class:`Design`, a NamedTuple of arrays, so the compiled functions are shared by every
dataset of the same shape.

Memory is O(N·(p+q) + m): rows are sorted by group and per-group quantities are built
with segment sums, never by padding groups to a common size.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._formula import FormulaSpec
from ._formula_eval import column as formula_column, evaluate, model_frame
from ._formula_nodes import Col, unparse
from ._pages import small_pages
from .errors import ArgumentError, DataError, FormulaError, JaxmmWarning


class Design(NamedTuple):
    """Arrays describing one dataset, rows sorted by group.

    X: (N, p) fixed-effects model matrix.     Z: (N, q) random-effects model matrix.
    y: (N,) response (successes for binomial). trials: (N,) binomial trials (ones otherwise).
    offset: (N,) known part of the linear predictor.
    weights: (N,) per-row weights. For the exact LMM they are prior weights (row variance
        σ²/w); in the Laplace likelihood they multiply each row's log density. Weight 0
        removes a row in both, which is how padded rows are made inert.
    group: (N,) int32 group code in [0, m).   counts: (m,) rows per group (padding excluded).
    tile_group: None, or (T,) int32 group of each tile of N/T consecutive rows. Each tile
        lies inside one group (groups start on a tile boundary, their last tile padded
        with weight-0 rows), so per-group sums are sums within tiles, then over tiles.
    """

    X: jnp.ndarray
    Z: jnp.ndarray
    y: jnp.ndarray
    trials: jnp.ndarray
    offset: jnp.ndarray
    weights: jnp.ndarray
    group: jnp.ndarray
    counts: jnp.ndarray
    tile_group: jnp.ndarray | None = None

    @property
    def n_groups(self) -> int:
        return self.counts.shape[0]


@dataclasses.dataclass(frozen=True)
class DesignInfo:
    """Host-side labels that go with a :class:`Design`."""

    fixef_names: tuple
    re_names: tuple
    group_name: str
    group_labels: tuple
    response: str
    layout: Layout  # where each input row and group sits in the design
    n_dropped: int = 0  # rows dropped for missing values (missing="drop")
    x_scale: tuple = ()  # SD of each fixed-effect column (1 for constant columns), for diagnostics
    encoders: "Encoders | None" = None  # to evaluate the model on new data (predict)
    row_index: pd.Index | None = None   # the table's index of the fitted rows, in input order


class Encoders(NamedTuple):
    """What turns a new table into the fitted model's columns: formulaic's model specs
    (they keep factor levels and transforms' state) and the fixed columns kept after
    dropping aliased ones."""

    fixed: object
    random: object
    fixed_kept: tuple  # names (formulaic's spelling) of the kept fixed-effect columns
    levels: dict | None = None  # model-frame column -> the levels of each factor, to refuse unseen ones


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


# Rows per block above which a design is laid out in several group-aligned blocks. A fit
# then processes one block at a time, so its temporary memory is bounded by the block, not
# the data. The Laplace fit's passes are fused loops (tiles and the written gradient) with
# about 100 bytes a row of temporaries (measured: 1M rows in one block against two, +48 MB
# peak RSS), so blocks of 4M rows; one block where the data fit saves the block loop's
# compile (1M rows: 0.4 s).
CHUNK_ROWS = 1 << 22
# Fits differentiated by autodiff through the rows (AGHQ, and the replicates of a by= fit,
# which has no blocks) hold about 650 bytes a row of reverse-mode temporaries.
AUTODIFF_CHUNK_ROWS = 1 << 19
# On a GPU the blocks run one after another, each a handful of kernels, so small blocks
# leave the device idle between launches; its memory (tens of GB) holds far larger ones.
# 2**24 rows is about 11 GB of temporaries at 650 bytes a row.
GPU_CHUNK_ROWS = 1 << 24


# Rows per tile. Fits lay each group out in whole tiles of this many rows, so the passes
# over the rows sum within (T, TILE_ROWS) tiles, then over tiles. XLA:CPU fuses the family
# kernel and every per-group sum into one reduction over the tile axis, where the
# segment sums of single rows each materialised the kernel's outputs: measured on a
# 2-core CPU, a Bernoulli q = 2 pass over 1M rows took 7 ms against 36-40 ms (2 rows per
# tile: 23 ms; 8, 16, 32: 11-12 ms; float32 the same). Padding costs at most
# TILE_ROWS - 1 rows a group.
TILE_ROWS = 4


def default_chunk_rows(autodiff: bool = False) -> int:
    """Rows per block on the default backend: :data:`CHUNK_ROWS` on the CPU
    (:data:`AUTODIFF_CHUNK_ROWS` for a fit differentiated through the rows),
    :data:`GPU_CHUNK_ROWS` on accelerators."""
    if jax.default_backend() != "cpu":
        return GPU_CHUNK_ROWS
    return AUTODIFF_CHUNK_ROWS if autodiff else CHUNK_ROWS


class LayoutShape(NamedTuple):
    """What a :class:`Layout` fixes of a design's shapes, known before its row slots are
    built: ``levels`` groups in the data, laid out in ``chunks`` blocks of ``n_rows / chunks``
    rows and ``n_groups / chunks`` group slots."""

    n_rows: int
    n_groups: int
    chunks: int
    levels: int


class Layout(NamedTuple):
    """Where each input row and group sits in a :class:`Design`.

    The design is ``chunks`` equal blocks of ``n_rows / chunks`` rows and
    ``n_groups / chunks`` group slots; every group lies inside one block, rows are sorted
    by group slot, and unused rows and slots are inert padding.
    """

    row_slot: np.ndarray    # (n,) design row of each input row
    group_slot: np.ndarray  # (m,) design group of each group, in label order
    n_rows: int
    n_groups: int
    chunks: int


def _is_sorted(a: np.ndarray) -> bool:
    return a.size < 2 or bool(np.all(a[1:] >= a[:-1]))


def _code_order(codes: np.ndarray, m: int) -> np.ndarray:
    """``np.argsort(codes, kind="stable")`` for integer codes in [0, m), by radix passes of
    16 bits: numpy sorts 16-bit keys stably by radix, in linear time, where 64-bit keys take
    a merge sort. Measured on a 2-core CPU, 10M codes of 1M groups in random order: 1.07 s
    against 2.17 s."""
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
        # orders them. 10M rows of 1M string categories, 2-core CPU: the values built and
        # hashed took 7.8 s.
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
        # them): a table of the values present instead of a hash. 10M ids of 1M groups in
        # random order, 2-core CPU: 0.30-0.37 s against 1.2-1.6 s for the hash below.
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
    # (10M group codes: 1.42 s against 0.27 s; 2M: 0.082 against 0.014 s). Values that
    # cannot be ordered raise TypeError from the sort, as np.unique does.
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
    same code-point order. 1M distinct ids on a 2-core CPU: 0.8 s against 3.1 s.

    numpy's text drops trailing NULs, so strings ending in one keep the object sort, as do
    arrays that would make too much text."""
    if values.dtype == object and values.size > 1 and pd.api.types.infer_dtype(values, skipna=False) == "string":
        lengths = np.fromiter(map(len, values), np.int64, values.size)
        if values.size * int(lengths.max()) * 4 <= _TEXT_SORT_BYTES:
            text = values.astype(str)
            if np.array_equal(np.char.str_len(text), lengths):
                return np.argsort(text, kind="stable")
    return np.argsort(values, kind="stable")


def plan_layout(codes: np.ndarray, m: int, *, bucket: bool = False, chunk_rows: int | None = None,
                size: tuple[int, int] | None = None, min_chunks: int = 1, tile: int = 1,
                on_shape=None) -> Layout:
    """Sort rows by group, split them into group-aligned blocks of about ``chunk_rows``
    (default :func:`default_chunk_rows`) and pad (see :class:`Layout`).

    ``size=(rows, groups)`` pads a one-block layout to that shape (designs stacked for a
    batched fit share it). ``min_chunks`` makes the number of blocks a multiple of it, at
    least that many (one block per device of a sharded fit); blocks may be empty.
    ``tile`` > 1 starts every group on a multiple of ``tile`` rows and pads its last tile
    (see :data:`TILE_ROWS`).

    ``on_shape(LayoutShape)`` is called as soon as the shapes are known, before the row
    slots are built: at 10M rows those are a tenth of a second of host work, which then
    overlaps the fit's compilation instead of delaying its start.
    """
    chunk_rows = default_chunk_rows() if chunk_rows is None else chunk_rows
    n = codes.size
    counts = np.bincount(codes, minlength=m)
    sorted_codes = _is_sorted(codes)
    order = None if sorted_codes else _code_order(codes, m)  # keeps the within-group row order
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first sorted row of each group
    span = -(-counts // tile) * tile  # design rows of each group
    at = np.concatenate([[0], np.cumsum(span)[:-1]])  # its first row in one unbroken layout
    total = int(at[-1] + span[-1])
    round_up = lambda k: -(-k // tile) * tile
    if total <= chunk_rows and min_chunks == 1:
        chunk = np.zeros(m, np.int64)
        rows_per, groups_per, n_chunks = total, m, 1
    else:
        biggest = int(span.max())
        if total > chunk_rows:
            # As few blocks as chunk_rows allows, of equal size: blocks of chunk_rows each
            # padded the last one (10M rows: 3 blocks of 4.19M, 26 % padding rows, each
            # processed by every pass).
            n_blocks = -(-total // chunk_rows)
            n_blocks = -(-n_blocks // min_chunks) * min_chunks
            rows_per = round_up(max(-(-total // n_blocks) + biggest, 2 * bucket_size(biggest)))
        else:  # split a small design evenly over min_chunks blocks
            rows_per = round_up(-(-total // min_chunks) + biggest)
        # A group starting before k·step + step ends before k·step + step + biggest, so
        # every block of groups that start in one window of `step` rows fits in rows_per.
        step = rows_per - biggest
        chunk = at // step
        n_chunks = int(chunk[-1]) + 1
        used = np.unique(chunk)
        if used.size != n_chunks:  # windows with no group starting in them: close the gaps
            chunk = np.searchsorted(used, chunk)
            n_chunks = used.size
        groups_per = int(np.bincount(chunk).max())
        n_chunks = -(-n_chunks // min_chunks) * min_chunks
    if bucket:
        rows_per, groups_per = round_up(bucket_size(rows_per)), bucket_size(groups_per)
    if size is not None:
        if n_chunks != 1 or size[0] < rows_per or size[1] < groups_per or size[0] % tile:
            raise ValueError(f"size {size} cannot hold a layout of {n_chunks} x ({rows_per}, {groups_per}) "
                             f"in tiles of {tile} rows")
        rows_per, groups_per = size
    if on_shape is not None:
        on_shape(LayoutShape(n_chunks * rows_per, n_chunks * groups_per, n_chunks, m))
    first_group = np.searchsorted(chunk, np.arange(n_chunks))
    local_group = np.arange(m) - first_group[chunk]
    group_slot = chunk * groups_per + local_group
    group_row = chunk * rows_per + at - at[first_group[chunk]]  # design row of each group's first row
    # int32 where the layout allows (the device takes int32 indices): half the fresh host
    # memory of int64, whose page faults are much of a large design's host time
    index = np.int32 if n_chunks * rows_per < 2 ** 31 else np.int64
    # In group order, each group's rows shift by one amount: a repeat, not gathers of N rows.
    slot_in_order = np.repeat((group_row - start).astype(index), counts)
    slot_in_order += np.arange(n, dtype=index)
    if sorted_codes:
        row_slot = slot_in_order
    else:
        row_slot = np.empty(n, index)
        row_slot[order] = slot_in_order
    return Layout(row_slot, group_slot, n_chunks * rows_per, n_chunks * groups_per, n_chunks)


def tile_groups(group_of_row: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """(group of each tile, group of each row) from a layout's row groups, where every tile
    starts with a row of its group: the rows padding a group's last tile join that group."""
    tiles = group_of_row[..., ::tile]
    return tiles, np.repeat(tiles, tile, axis=-1)


# Rows from which a design is padded by a compiled program (``_lay_out``) rather than by
# numpy on the host. Padding on the host writes every padded array into fresh host memory,
# and those page faults were most of a 10M-row design's 2 s on the H100 machine, where 0.5 s
# of a warm fit was the GPU's; the device lays the rows out in milliseconds. The layout
# program compiles for each new number of rows (0.35-0.4 s on a 2-core CPU), which costs
# more than the host work below a few million rows on the CPU: there, at 1M rows, 0.47 s
# cold against 0.24 s on the host; at 10M rows 1.4 s cold against 3.3 s.
DEVICE_LAYOUT_ROWS = 1 << 20
CPU_DEVICE_LAYOUT_ROWS = 1 << 22

# Padded rows have weight 0, but their y must still be in every family's support (1 is:
# a gamma log y or a binomial y <= trials): 0 * log(0) would be NaN.
_FILLS = {"X": 0.0, "Z": 0.0, "y": 1.0, "trials": 1.0, "offset": 0.0, "weights": 0.0}
# The value of each optional row column when it is not given.
_DEFAULTS = {"trials": 1.0, "offset": 0.0, "weights": 1.0}


def _row_columns(X, Z, y, trials, offset, weights) -> dict:
    """The design's float row columns by name; an optional one not given is its default value
    (a scalar), so the layouts need not build an array of ones or zeros on the host."""
    given = dict(X=X, Z=Z, y=y, trials=trials, offset=offset, weights=weights)
    return {name: _DEFAULTS[name] if values is None else values for name, values in given.items()}


def to_device(values, dtype=None):
    """A host array on the default device, as ``dtype`` (canonicalised: float32 for float64
    when x64 is off). ``jax.device_put`` rather than ``jnp.asarray``: in jax 0.10 the latter
    compiles a small program for every new shape it copies (10-25 ms each on a 2-core CPU,
    three or four of them in a cold fit), where device_put only copies."""
    values = np.asarray(values)
    if dtype is not None:
        values = values.astype(jax.dtypes.canonicalize_dtype(dtype), copy=False)
    return jax.device_put(values)


@functools.partial(jax.jit, static_argnames=("n_rows", "rows_per_chunk", "groups_per_chunk", "tile", "dtype",
                                             "constants", "sorted_rows", "plain"))
def _lay_out(columns, row_slot, row_group, sources=None, codes=None, *, n_rows, rows_per_chunk, groups_per_chunk,
             tile, dtype, constants, sorted_rows, plain=()):
    """The padded design columns from the unpadded ones (``make_design``'s device path).

    ``columns``: name -> (n, ...) values; ``constants``: ((name, value), ...) for the
    columns given as one value. Padding takes :data:`_FILLS`. ``plain``: ((name,
    column sources), ...) for the matrices given as a :class:`PlainMatrix`, built here
    from ``sources`` (table column name -> (n,) values) and ``codes`` (factor column name
    -> (n,) level codes; a source (name, code) is the indicator of one level).
    """
    def scatter(values, fill, kind=dtype):
        out = jnp.full((n_rows,) + values.shape[1:], fill, kind)
        return out.at[row_slot].set(values.astype(kind), indices_are_sorted=sorted_rows, unique_indices=True,
                                    mode="promise_in_bounds")

    out = {name: scatter(values, _FILLS[name]) for name, values in columns.items()}
    if plain:
        assert all(_FILLS[name] == 0.0 for name, _ in plain)  # the placed columns pad with 0
        placed = {name: scatter(values, 0.0) for name, values in (sources or {}).items()}
        if any(None in names for _, names in plain):
            placed[None] = scatter(jnp.ones(row_slot.shape, dtype), 0.0)  # the intercept
        # a factor's codes are placed once (padding rows hold -1, no level) and compared
        # where the matrix is computed: one array of 1-byte codes instead of one of floats per level
        placed_codes = {name: scatter(values, -1, values.dtype) for name, values in (codes or {}).items()}
        for name, names in plain:
            out[name] = _plain_columns(names, placed, placed_codes, n_rows, dtype)
    for name, value in constants:
        fill = _FILLS[name]
        out[name] = (jnp.full(n_rows, fill, dtype) if value == fill
                     else scatter(jnp.full(row_slot.shape, value, dtype), fill))
    # padding rows belong to the last group slot of their block
    pad_group = (jnp.arange(n_rows, dtype=jnp.int32) // rows_per_chunk) * groups_per_chunk + groups_per_chunk - 1
    group = pad_group.at[row_slot].set(row_group, indices_are_sorted=sorted_rows, unique_indices=True,
                                       mode="promise_in_bounds")
    tile_group = None
    if tile > 1:
        tile_group = group[::tile]
        # A broadcast, not jnp.repeat(..., total_repeat_length=n_rows): that form builds its
        # gather indices by two cumsums over constants, which XLA:GPU constant-folds in its
        # slow evaluator (a 10M-row layout compiled for over 200 s on an H100).
        group = jnp.broadcast_to(tile_group[:, None], (tile_group.shape[0], tile)).reshape(n_rows)
    return out, group, tile_group


def _plain_columns(names, placed, placed_codes, n_rows: int, dtype):
    """The (n_rows, len(names)) matrix of a :class:`PlainMatrix` from its placed sources:
    ``placed`` (column name, or None for the intercept -> values) and ``placed_codes``
    (factor column -> level codes; a name (column, code) is the indicator of that level).

    Written as one elementwise expression of the sources, each broadcast over the columns it
    fills, so that XLA computes the matrix in one loop. Stacked column by column, each
    indicator was materialised before the copy into the matrix: at 10M rows with a 10-level
    factor (XLA:CPU) the layout program held 1010 MB of temporaries, against 86 MB without
    the factor.
    """
    out = jnp.zeros((n_rows, len(names)), dtype)
    for source in dict.fromkeys(k for k in names if not isinstance(k, tuple)):
        fills = np.array([not isinstance(k, tuple) and k == source for k in names])
        out = jnp.where(fills[None, :], placed[source][:, None], out)
    for factor in dict.fromkeys(k[0] for k in names if isinstance(k, tuple)):
        codes = placed_codes[factor]
        # -2 matches no row: placed codes are a level's, or -1 on padding rows
        level = np.array([k[1] if isinstance(k, tuple) and k[0] == factor else -2 for k in names], codes.dtype)
        out = jnp.where(codes[:, None] == level[None, :], jnp.ones((), dtype), out)
    return out


def abstract_design(n: int, m: int, p: int, q: int, dtype, tile: int) -> Design:
    """The shapes and dtypes of the :class:`Design` of ``n`` rows and ``m`` group slots
    that :func:`make_design` builds (on the default device), as ``jax.ShapeDtypeStruct``
    leaves."""
    kind = jax.dtypes.canonicalize_dtype(dtype)
    array = lambda *shape, kind=kind: jax.ShapeDtypeStruct(shape, kind)
    return Design(X=array(n, p), Z=array(n, q), y=array(n), trials=array(n), offset=array(n), weights=array(n),
                  group=array(n, kind=jnp.int32), counts=array(m),
                  tile_group=array(n // tile, kind=jnp.int32) if tile > 1 else None)


def _nonnegative_weights(weights) -> np.ndarray:
    weights = _as_float("weights", weights)
    if (weights < 0).any():
        rows = np.flatnonzero(weights < 0)
        raise DataError(f"weights has {rows.size} negative value(s) (first rows: {rows[:5].tolist()})")
    if weights.size and not (weights > 0).any():
        raise DataError("weights are zero on every row: no row informs the fit")
    return weights


def _announcer(on_layout, host: bool, p: int, q: int, dtype, tile: int):
    """The ``on_shape`` of :func:`plan_layout` that calls ``on_layout(abstract, shape)``
    (see :func:`make_design`); None where nothing is to be called (host arrays)."""
    if on_layout is None or host:
        return None
    return lambda shape: on_layout(abstract_design(shape.n_rows, shape.n_groups, p, q, dtype, tile), shape)


def plan_design(groups, *, bucket: bool = False, chunk_rows: int | None = None, size=None, min_chunks: int = 1,
                tile: int = TILE_ROWS, on_shape=None, group_name: str | None = None):
    """(group labels, group code of each row, :class:`Layout`) of a design's groups: all that
    its shapes depend on, before any other column is built. ``on_shape`` as in
    :func:`plan_layout`; ``group_name`` names the grouping column in errors."""
    groups = groups if isinstance(groups, pd.api.extensions.ExtensionArray) else np.asarray(groups)
    if pd.isna(groups).any():
        raise DataError(f"groups has {int(pd.isna(groups).sum())} missing value(s)")
    try:
        labels, codes = unique_inverse(groups)
    except TypeError:
        raise DataError(_mixed_groups(groups, group_name)) from None
    layout = plan_layout(codes, len(labels), bucket=bucket, chunk_rows=chunk_rows, size=size, min_chunks=min_chunks,
                         tile=tile, on_shape=on_shape)
    return labels, codes, layout


@small_pages()
def make_design(X, Z, y, groups, *, trials=None, offset=None, weights=None, dtype=jnp.float64,
                bucket: bool = False, chunk_rows: int | None = None, size=None, min_chunks: int = 1,
                host: bool = False, tile: int = TILE_ROWS,
                device_layout: bool | None = None, on_layout=None, plan=None):
    """Build a :class:`Design` from arrays. Returns (design, group_labels, layout).

    ``tile`` rows per tile (:data:`TILE_ROWS`); 1 lays the rows out without tiles.

    ``bucket=True`` pads rows and group slots up to a coarse ladder of sizes
    (:func:`bucket_size`) so that datasets of similar size share one compiled fit.
    ``size`` and ``min_chunks`` as in :func:`plan_layout`. ``host=True`` leaves the arrays
    in numpy (to be stacked with others before one transfer to the device).
    ``device_layout``: pad with a compiled program; None chooses it for large data
    (:data:`DEVICE_LAYOUT_ROWS`, :data:`CPU_DEVICE_LAYOUT_ROWS`).
    ``on_layout(abstract, shape)`` is called once the shapes are known and before the
    arrays are built, with the design as ``jax.ShapeDtypeStruct`` leaves
    (:func:`abstract_design`) and its :class:`LayoutShape`: the fit starts compiling its
    program there.
    ``plan``: ``(labels, codes, layout)`` of ``groups`` as :func:`plan_design` gives them,
    already computed (its caller has also called ``on_layout``).
    """
    y = _as_float("y", y)
    n = y.shape[0]
    if device_layout is None:
        device_layout = not host and n >= (CPU_DEVICE_LAYOUT_ROWS if jax.default_backend() == "cpu"
                                           else DEVICE_LAYOUT_ROWS)
    # a PlainMatrix stays unfilled for the device layout (its columns were checked as table columns)
    X = X if device_layout and isinstance(X, PlainMatrix) else _as_float("X", X)
    Z = Z if device_layout and isinstance(Z, PlainMatrix) else _as_float("Z", Z)
    if X.ndim != 2 or Z.ndim != 2 or y.ndim != 1:
        raise DataError("X and Z must be 2-D and y 1-D")
    if X.shape[0] != n or Z.shape[0] != n or len(groups) != n:
        raise DataError(
            f"X ({X.shape[0]} rows), Z ({Z.shape[0]}), y ({n}) and groups ({len(groups)}) "
            "must have the same number of rows"
        )
    if n == 0:
        raise DataError("the data have no rows")
    if weights is not None:
        weights = _nonnegative_weights(weights)
    if plan is None:
        labels, codes, layout = plan_design(groups, bucket=bucket, chunk_rows=chunk_rows, size=size,
                                            min_chunks=min_chunks, tile=tile,
                                            on_shape=_announcer(on_layout, host, X.shape[1], Z.shape[1], dtype, tile))
    else:
        labels, codes, layout = plan
    counts = np.zeros(layout.n_groups)
    counts[layout.group_slot] = np.bincount(codes, minlength=len(labels))
    given = _row_columns(X, Z, y, None if trials is None else _as_float("trials", trials),
                         None if offset is None else _as_float("offset", offset), weights)
    if device_layout:
        plain = tuple((k, v.layout_sources) for k, v in given.items() if isinstance(v, PlainMatrix))
        # integer columns become the design's float type here: without x64 the transfer
        # would wrap int64 into int32
        kind = jax.dtypes.canonicalize_dtype(dtype)
        sources = {name: values if values.dtype.kind == "f" else values.astype(kind)
                   for v in given.values() if isinstance(v, PlainMatrix) for name, values in v.columns.items()}
        level_codes = {name: values for v in given.values() if isinstance(v, PlainMatrix)
                       for name, values in v.codes.items()}
        given = {k: v for k, v in given.items() if not isinstance(v, PlainMatrix)}
        constants = tuple((k, v) for k, v in given.items() if np.ndim(v) == 0)
        columns = {k: v for k, v in given.items() if np.ndim(v) > 0}
        cols, group, tile_group = _lay_out(
            columns, layout.row_slot.astype(np.int32, copy=False), layout.group_slot.astype(np.int32)[codes],
            sources, level_codes, n_rows=layout.n_rows, rows_per_chunk=layout.n_rows // layout.chunks,
            groups_per_chunk=layout.n_groups // layout.chunks, tile=tile, dtype=np.dtype(dtype).name,
            constants=constants, sorted_rows=_is_sorted(layout.row_slot), plain=plain)
        design = Design(**cols, group=group, counts=to_device(counts, dtype), tile_group=tile_group)
        return design, tuple(labels.tolist()), layout
    to_array = (lambda a, kind: a) if host else to_device
    # Sorted rows in one block land on the first n rows: slices then replace a scatter
    # and a full pre-fill (about 0.6 s of host time at 10M rows).
    leading = layout.chunks == 1 and bool(np.all(layout.row_slot == np.arange(n)))

    def place(values, fill, kind=dtype):
        # One host array at a time, so the peak is one copy of the largest column block.
        shape = (layout.n_rows,) + np.shape(values)[1:]
        if np.ndim(values) == 0 and values == fill:
            return to_array(np.full(shape, fill, np.dtype(kind)), kind)
        if leading:
            out = np.empty(shape, np.dtype(kind))
            out[:n], out[n:] = values, fill
        else:
            out = np.full(shape, fill, np.dtype(kind))
            out[layout.row_slot] = values
        return to_array(out, kind)

    padding_group = np.repeat(np.arange(layout.chunks) * (layout.n_groups // layout.chunks)
                              + layout.n_groups // layout.chunks - 1, layout.n_rows // layout.chunks)
    group = padding_group.astype(np.int32)
    group[layout.row_slot] = layout.group_slot[codes]
    tile_group = None
    if tile > 1:
        tile_group, group = tile_groups(group, tile)
    design = Design(
        **{name: place(values, _FILLS[name]) for name, values in given.items()},
        group=to_array(group, jnp.int32),
        counts=to_array(counts.astype(np.dtype(dtype)), dtype),
        tile_group=None if tile_group is None else to_array(tile_group, jnp.int32),
    )
    return design, tuple(labels.tolist()), layout


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


# A treatment-coded factor's column, from C(name) or from a factor (text, category, bool) used bare.
_CATEGORY = re.compile(r"^(?:C\((\w+)\)|(\w+))\[T\.(.*)\]$")


def _lme4_name(name: str, factors: bool = True) -> str:
    """A formulaic column name in lme4's spelling: Intercept -> (Intercept), and with
    ``factors`` C(period)[T.2] and period[T.2] -> period2, x:period[T.2] -> x:period2."""
    if name == "Intercept":
        return "(Intercept)"
    if not factors:
        return name
    return ":".join(_CATEGORY.sub(lambda m: (m.group(1) or m.group(2)) + m.group(3), part) for part in name.split(":"))


def _lme4_names(names) -> list[str]:
    """:func:`_lme4_name` of each column, or formulaic's names where two spellings would be the
    same (a factor c with a level b beside a column cb): labels must tell the columns apart."""
    spelled = [_lme4_name(n) for n in names]
    return spelled if len(set(spelled)) == len(spelled) else [_lme4_name(n, factors=False) for n in names]


def for_formulaic(data: pd.DataFrame) -> pd.DataFrame:
    """The table as formulaic is to read it. formulaic encodes text of pandas' default string
    dtype ("str") by its levels, but passes text of the "string" dtype (missing values as
    pd.NA) through as text, which then fails to convert to floats; as Python strings it is
    encoded like "str"."""
    text = [c for c, dtype in data.dtypes.items()
            if isinstance(dtype, pd.StringDtype) and dtype.na_value is pd.NA and (data.columns == c).sum() == 1]
    return data.astype(dict.fromkeys(text, object)) if text else data


def _model_matrix(text: str, frame: pd.DataFrame, what: str, spec=None):
    """formulaic's model matrix of jaxmm's formula ``text`` over the model frame; its errors
    as one jaxmm error, in the user's terms (``spec.display``)."""
    from formulaic import model_matrix

    try:
        return model_matrix(text, for_formulaic(frame), na_action="raise")
    except Exception as exc:  # formulaic raises many types; one clear jaxmm error instead
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        said = (spec.fixed if what.startswith("fixed") else spec.random) if spec is not None else text
        if spec is not None:
            msg = spec.display(msg)
        if "null values" in msg or "missing" in msg.lower():
            raise DataError(f"{what}: {msg}") from None
        raise FormulaError(f"cannot evaluate the {what} {said!r}: {msg}") from None


# Rows of the table that formulaic evaluates first. Where every column of a model matrix is
# the intercept or a numeric column of the table (most large fits: y ~ x1 + x2 + (x1 | g)),
# the full matrix is filled from the table's columns instead. At 10M rows formulaic's frames
# and their conversion to one array took 0.7-1.4 s on the 2-core CPU and held about 0.9 GB
# of fresh memory; the fill takes about 0.1 s.
_HEAD_ROWS = 8


def _head_matrix(formula: str, head: pd.DataFrame):
    """formulaic's model matrix of the table's first rows, quietly: None where that fails or
    warns, so that the whole table is evaluated and reports it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return _model_matrix(formula, head, "formula")
    except Exception:
        return None


_NOT_PLAIN = object()


class _Factor(NamedTuple):
    """A formula term that encodes one table column's levels (``f``, ``C(f)``)."""
    column: str


_C_OF_COLUMN = re.compile(r"^C\(\s*(\w+)\s*\)$")


def _is_factor_column(values: pd.Series) -> bool:
    """Whether formulaic encodes a looked-up column by its levels: categories, text, bools."""
    dtype = values.dtype
    return (isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype))
            or (isinstance(dtype, np.dtype) and dtype.kind in "bOU"))


def _term_source(term, data: pd.DataFrame):
    """The table column a formula term copies, None for the intercept, a :class:`_Factor`
    for the levels of one column (indicators, checked in :func:`_plain_sources`), or
    _NOT_PLAIN (a transform, a product, a column of another dtype)."""
    from formulaic.parser.types import Factor

    if len(term.factors) != 1:
        return _NOT_PLAIN
    factor = term.factors[0]
    if factor.eval_method is Factor.EvalMethod.LITERAL and factor.expr == "1":
        return None
    if factor.eval_method is Factor.EvalMethod.LOOKUP and factor.expr in data.columns:
        values = data[factor.expr]
        if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf":
            return factor.expr
        return _Factor(factor.expr) if _is_factor_column(values) else _NOT_PLAIN
    if factor.eval_method is Factor.EvalMethod.PYTHON:
        named = _C_OF_COLUMN.match(factor.expr)
        if named and named.group(1) in data.columns:
            return _Factor(named.group(1))
    return _NOT_PLAIN


def _plain_terms(formula: str, data: pd.DataFrame) -> list | None:
    """The columns of the plain terms (:func:`_term_source`) of a formula (both sides), from
    the parsed formula alone, or None where a term is not plain: only plain formulas are
    evaluated on a few rows, so the others pay formulaic once."""
    from formulaic import Formula

    try:
        parsed = Formula(formula)
    except Exception:  # noqa: BLE001 - formulaic's own evaluation reports it
        return None
    sides = [parsed.lhs, parsed.rhs] if hasattr(parsed, "rhs") else [parsed]
    sources = [_term_source(term, data) for side in sides for term in side]
    return None if any(source is _NOT_PLAIN for source in sources) else sources


def _factor_levels(values):
    """(labels, code of each row) of a factor column: a categorical's categories, every one
    of them (formulaic encodes unused ones too), or the sorted distinct values."""
    if isinstance(values, pd.Categorical):
        return np.asarray(values.categories), values.codes
    return unique_inverse(values)


def _levels_of(sources, data: pd.DataFrame) -> dict | None:
    """column -> (labels, codes) of the factor columns among ``sources``; None where a
    column's values cannot be ordered (formulaic then evaluates the table and reports it)."""
    levels = {}
    for source in sources:
        if isinstance(source, _Factor) and source.column not in levels:
            values = data[source.column]
            pandas_array = isinstance(values.dtype, (pd.CategoricalDtype, pd.StringDtype))
            try:
                levels[source.column] = _factor_levels(values.array if pandas_array else values.to_numpy())
            except TypeError:
                return None
    return levels


def _sample_rows(n: int, levels: dict) -> np.ndarray:
    """The first rows of the table and one row of every level of each factor: formulaic's
    matrix of these rows has the whole table's columns, and shows each one's encoding."""
    rows = [np.arange(min(n, _HEAD_ROWS))]
    for labels, codes in levels.values():
        one = np.zeros(len(labels), np.intp)  # a category no row holds keeps row 0
        one[codes] = np.arange(codes.size)
        rows.append(one)
    return np.unique(np.concatenate(rows))


def _plain_sources(matrix, data: pd.DataFrame, levels: dict | None = None, rows: np.ndarray | None = None):
    """The source of each column of a formulaic model matrix of the table's ``rows`` (all
    when None): None for the intercept, a numeric column's name, or (column, level) for the
    indicator of one level of a factor column (``levels``: :func:`_levels_of`). None when
    any column is something else, e.g. a contrast other than treatment (dummy) coding."""
    spec = matrix.model_spec
    names = list(matrix.columns)
    sources = []
    for term in spec.terms:
        source = _term_source(term, data)
        span = spec.term_slices[term]
        if source is _NOT_PLAIN:
            return None
        if not isinstance(source, _Factor):
            if names[span] != ["Intercept" if source is None else source]:
                return None
            sources.append(source)
            continue
        if levels is None or source.column not in levels:
            return None
        labels, codes = levels[source.column]
        codes = codes if rows is None else codes[rows]
        values = np.asarray(matrix, dtype=np.float64)[:, span]
        for j in range(values.shape[1]):
            ones = values[:, j] == 1.0
            held = np.unique(codes[ones])
            if held.size != 1 or not np.all(ones | (values[:, j] == 0.0)) or not np.array_equal(codes == held[0], ones):
                return None
            sources.append((source.column, labels[held[0]]))
    return sources if len(sources) == len(names) else None


def _plain_matrix(sources: list, data: pd.DataFrame, levels: dict | None = None) -> np.ndarray:
    """The model matrix of ``sources`` (:func:`_plain_sources`), filled on the host."""
    return np.asarray(PlainMatrix(sources, data, levels))


class PlainMatrix:
    """A model matrix whose columns are the intercept (None in ``sources``), numeric columns
    of the table (a name) or indicators of one level of a factor column ((name, level)), not
    yet filled. ``columns``: name -> values of the numeric columns; ``codes``: name -> the
    level code of each row of the factor columns; ``layout_sources``: the sources with each
    level as its code.

    ``np.asarray`` fills it on the host. A design laid out on the device builds it there
    from the distinct table columns instead (``_lay_out``): at 10M rows and X = [1, x1, x2],
    Z = [1, x1] that moves 2 columns to the device instead of 5, with no host fill, and a
    factor of 10 levels moves as one column of 1-byte codes instead of 9 of floats.
    """

    ndim = 2

    def __init__(self, sources, data: pd.DataFrame, levels: dict | None = None):
        self.sources = tuple(sources)
        factors = [s for s in self.sources if isinstance(s, tuple)]
        levels = levels if levels is not None else _levels_of([_Factor(s[0]) for s in factors], data)
        self.columns = {name: data[name].to_numpy() for name in self.sources if isinstance(name, str)}
        self.codes, code_of = {}, {}
        for name in dict.fromkeys(s[0] for s in factors):
            labels, codes = levels[name]
            kind = np.int8 if len(labels) <= 127 else np.int16 if len(labels) <= 32767 else np.int32
            self.codes[name] = codes.astype(kind, copy=False)
            code_of[name] = {label: i for i, label in enumerate(labels.tolist())}
        self.layout_sources = tuple((s[0], code_of[s[0]][_python(s[1])]) if isinstance(s, tuple) else s
                                    for s in self.sources)
        self.shape = (len(data), len(self.sources))

    def _column(self, source):
        if source is None:
            return 1.0
        if isinstance(source, tuple):
            return self.codes[source[0]] == source[1]
        return self.columns[source]

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape[::-1]).T  # column-major, as formulaic's frames convert
        for j, source in enumerate(self.layout_sources):
            out[:, j] = self._column(source)
        return out if dtype is None else out.astype(dtype, copy=False)

    def scales(self, rows: int = 1 << 18) -> tuple:
        """:func:`column_scales`, one table column at a time."""
        n = self.shape[0]
        out = []
        for source in self.layout_sources:
            if source is None:
                out.append(1.0)
            elif isinstance(source, tuple):
                share = np.count_nonzero(self._column(source)) / n if n else 0.0
                sd = np.sqrt(share * (1.0 - share))
                out.append(float(sd) if sd > 0 else 1.0)
            else:
                out.append(column_scales(np.asarray(self.columns[source], dtype=np.float64)[:, None], rows)[0])
        return tuple(out)

    def gram(self) -> np.ndarray:
        """XᵀX, from the table's columns and the level counts, without the matrix."""
        n, sources = self.shape[0], self.layout_sources
        numeric = {name: np.asarray(values, dtype=np.float64) for name, values in self.columns.items()}
        sizes = {name: int(codes.max(initial=-1)) + 1 for name, codes in self.codes.items()}
        counts = {name: np.bincount(codes, minlength=sizes[name]) for name, codes in self.codes.items()}
        sums = functools.cache(lambda factor, name: np.bincount(self.codes[factor], weights=numeric[name],
                                                                minlength=sizes[factor]))

        def joint(a, b):
            return np.bincount(self.codes[a].astype(np.int64) * sizes[b] + self.codes[b],
                               minlength=sizes[a] * sizes[b]).reshape(sizes[a], sizes[b])

        joint = functools.cache(joint)
        gram = np.empty((len(sources), len(sources)))
        for i, a in enumerate(sources):
            for j, b in enumerate(sources[:i + 1]):
                if a is None and b is None:
                    value = float(n)
                elif a is None or b is None:
                    c = b if a is None else a
                    value = counts[c[0]][c[1]] if isinstance(c, tuple) else numeric[c].sum()
                elif isinstance(a, tuple) and isinstance(b, tuple):
                    if a[0] == b[0]:
                        value = counts[a[0]][a[1]] if a[1] == b[1] else 0.0
                    else:
                        value = joint(a[0], b[0])[a[1], b[1]]
                elif isinstance(a, tuple) or isinstance(b, tuple):
                    f, x = (a, b) if isinstance(a, tuple) else (b, a)
                    value = sums(f[0], x)[f[1]]
                else:
                    value = numeric[a] @ numeric[b]
                gram[i, j] = gram[j, i] = value
        return gram


def _python(value):
    """A numpy scalar as the Python value ``tolist`` gives (the key of a level's code)."""
    return value.item() if isinstance(value, np.generic) else value


def _checked_sources(matrix, data: pd.DataFrame, rows: np.ndarray, levels: dict) -> list | None:
    """:func:`_plain_sources` of formulaic's matrix of the table's ``rows``, where filling
    those rows gives formulaic's values; None otherwise (formulaic then evaluates the table)."""
    sources = None if matrix is None else _plain_sources(matrix, data, levels, rows)
    if sources is None:
        return None
    sample = data.iloc[rows]
    sample_levels = {name: (labels, codes[rows]) for name, (labels, codes) in levels.items()}
    if not np.array_equal(_plain_matrix(sources, sample, sample_levels), np.asarray(matrix, dtype=np.float64)):
        return None
    return sources


def _plain_gram(sources: list, data: pd.DataFrame, levels: dict | None = None) -> np.ndarray:
    """XᵀX of the matrix of ``sources`` from the table's columns, without building it."""
    return PlainMatrix(sources, data, levels).gram()


def _column(data: pd.DataFrame, name: str, role: str):
    if name not in data.columns:
        raise DataError(f"{role} column {name!r} is not in the data (columns: {list(data.columns)[:20]})")
    return data[name].to_numpy()


def _group_column(data: pd.DataFrame, name: str):
    """The grouping column's values. A categorical column stays a ``pd.Categorical``, whose
    codes number the groups (see :func:`unique_inverse`); a string column stays pandas'
    string array, which is hashed as it is rather than first built into one Python object
    per row (10M rows, 2-core CPU: about 1.9 s)."""
    if name in data.columns and isinstance(data[name].dtype, (pd.CategoricalDtype, pd.StringDtype)):
        return data[name].array
    return _column(data, name, "grouping")


def aliased_columns(X, rtol: float = 1e-7, *, gram: np.ndarray | None = None) -> list[int]:
    """Columns that are linear combinations of earlier ones (dropped in order, as lme4 does).

    Column j is aliased when its residual on the columns before it is below rtol·‖x_j‖.
    That residual norm is |R_jj| of a QR of X (aliased columns add nothing to the span, so
    "before it" and "kept before it" agree). R comes from the Cholesky factor of the p×p
    Gram matrix XᵀX, one pass with no N×p copy (10M×3: a Householder QR took 0.17-0.2 s).
    The Gram matrix resolves R_jj²/‖x_j‖² only to about 1e-15, so where that ratio falls
    between 1e-16 and 1e-12 (the threshold is rtol² = 1e-14) the QR decides instead.

    ``gram``: XᵀX where the caller has it; ``X`` may then be a function that returns the
    matrix, called only where the QR decides.
    """
    if gram is None:
        gram = X.T @ X
    p = gram.shape[0]
    if p == 0:
        return []
    norms2 = np.diag(gram).copy()
    R = np.zeros((p, p))
    ratios = np.zeros(p)
    for j in range(p):
        r = gram[:, j] - R[:j].T @ R[:j, j] if j else gram[:, j].copy()
        rjj2 = r[j]
        ratios[j] = rjj2 / norms2[j] if norms2[j] > 0 else 0.0
        if rjj2 > 0 and norms2[j] > 0:
            R[j, j:] = r[j:] / np.sqrt(rjj2)
        # an aliased column contributes no row of R: later columns see the same span
    if np.any((ratios > 1e-16) & (ratios < 1e-12)):
        X = X() if callable(X) else X
        if X.shape[0] < p:  # rows of zeros change no residual; R then has a diagonal entry per column
            X = np.vstack([X, np.zeros((p - X.shape[0], p))])
        norms = np.linalg.norm(X, axis=0)
        r = np.abs(np.diag(np.linalg.qr(X, mode="r")))
        return [j for j in range(p) if r[j] <= rtol * max(norms[j], 1e-300)]
    return [j for j in range(p) if ratios[j] <= rtol * rtol]


def column_scales(X: np.ndarray, rows: int = 1 << 18) -> tuple:
    """The SD of each column (1 for a constant one), in blocks of rows: X.std(axis=0) makes
    an N×p temporary, and at 10M rows its page faults took 0.06-0.5 s."""
    if isinstance(X, PlainMatrix):
        return X.scales(rows)
    n = X.shape[0]
    if n == 0:
        return tuple(1.0 for _ in range(X.shape[1]))
    mean = X.sum(axis=0) / n
    ss = np.zeros(X.shape[1])
    for start in range(0, n, rows):
        block = X[start:start + rows] - mean
        ss += np.einsum("ij,ij->j", block, block)
    return tuple(float(s) if s > 0 else 1.0 for s in np.sqrt(ss / n))


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


def _factor_levels_of(model_spec, frame: pd.DataFrame) -> dict:
    """model-frame column -> levels of each factor formulaic encoded (its encoder state)."""
    out = {}
    for expr, (kind, state) in model_spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        named = _C_OF_COLUMN.match(expr) or re.match(r"^C\((\w+),", expr)
        name = expr if expr in frame.columns else named.group(1) if named else None
        if name in frame.columns:
            out[name] = tuple(state["categories"])
    return out


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
            report.append((repr(col), bad))
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
            report.append((name, bad))
            mask |= bad
    if report and missing == "raise":
        parts = [f"{name}: {int(bad.sum())} row(s) (first rows: {np.flatnonzero(bad)[:5].tolist()})"
                 for name, bad in report]
        raise DataError("missing values in " + "; ".join(parts)
                        + ". Remove them, or pass missing=\"drop\" to drop those rows")
    return mask


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


class _Rows(NamedTuple):
    """A formula evaluated on a table: host arrays, one entry per kept input row."""

    X: np.ndarray
    Z: np.ndarray
    y: np.ndarray
    trials: np.ndarray | None
    offset: np.ndarray | None
    weights: np.ndarray | None
    groups: np.ndarray
    fixef_names: tuple
    re_names: tuple
    n_dropped: int
    data: pd.DataFrame  # the table after dropping rows (missing="drop")
    encoders: Encoders


def _rows_from_formula(spec: FormulaSpec, data, *, trials=None, offset=None, weights=None, missing="raise",
                       check_response=None, by=None, on_columns=None, defer_plain: bool = False) -> _Rows:
    """The formula's host arrays. ``on_columns(groups, p, q)`` is called once the rows are
    checked and the numbers of columns known, before the plain matrices are filled: a fit
    plans its layout and starts compiling there. ``defer_plain=True`` leaves them unfilled
    (:class:`PlainMatrix`), for :func:`make_design` to lay out."""
    data = as_pandas(data)
    if len(data) == 0:
        raise DataError("the data have no rows")
    for name, col in (("trials", trials), ("offset", offset), ("weights", weights), ("by", by)):
        if isinstance(col, str):
            _column(data, col, name)
    used = _used_columns(spec, data, {"trials": trials, "offset": offset, "weights": weights, "by": by})
    _column(data, spec.group, "grouping")
    repeated = sorted({c for c in used if (data.columns == c).sum() > 1}, key=str)
    if repeated:
        raise DataError(f"column(s) {repeated} appear more than once in the data; a model column must be one column")
    drop = _missing_rows(data, used, {"offset": offset, "weights": weights}, missing)
    n_dropped = int(drop.sum())
    if n_dropped:
        keep = ~drop
        data = data.loc[keep]
        offset = offset if offset is None or isinstance(offset, str) else np.asarray(offset)[keep]
        weights = weights if weights is None or isinstance(weights, str) else np.asarray(weights)[keep]
        if len(data) == 0:
            raise DataError(f"every row has a missing value in the model's columns {used}")
    groups = _group_column(data, spec.group)
    y = _response(spec, data)
    # formulaic reads only jaxmm's text for the formula (spec.fixed_text, spec.random_text),
    # over the model frame: the table's columns and jaxmm's evaluations of the terms.
    frame = model_frame(spec, data)
    # Formulas of plain terms (_term_source) are evaluated by formulaic on a sample of rows:
    # the first ones and one of each level of every factor. Their matrices are then filled
    # from the frame (below, or on the device: PlainMatrix).
    fixed_terms = random_terms = levels = None
    if len(frame) > _HEAD_ROWS:
        fixed_terms, random_terms = _plain_terms(spec.fixed_text, frame), _plain_terms(spec.random_text, frame)
        levels = _levels_of([*(fixed_terms or ()), *(random_terms or ())], frame)
    if levels is None:
        fixed_terms = random_terms = None
    else:
        rows = _sample_rows(len(frame), levels)
        sample = frame.iloc[rows]
    fixed = None if fixed_terms is None else _head_matrix(spec.fixed_text, sample)
    # x_sources / z_sources: the plain matrices, filled from the frame once everything is
    # checked and the shapes are out (on_columns); X / Z: formulaic's
    X = x_sources = None
    if fixed is not None:
        x_sources = _checked_sources(fixed, frame, rows, levels)
    if x_sources is None:
        fixed = _model_matrix(spec.fixed_text, frame, "fixed-effects formula", spec)
    raw_names = list(fixed.columns)
    fixed_names = _lme4_names([spec.display(n) for n in raw_names])
    fixed_spec = fixed.model_spec
    if x_sources is None:
        X = np.asarray(fixed, dtype=np.float64)
        dropped = aliased_columns(X)
    else:
        dropped = aliased_columns(lambda: _plain_matrix(x_sources, frame, levels),
                                  gram=_plain_gram(x_sources, frame, levels))
    del fixed  # formulaic's frames: at 10M rows each held copy is hundreds of MB
    if dropped:
        names = [fixed_names[j] for j in dropped]
        warnings.warn(f"fixed-effect model matrix is rank deficient; dropping aliased column(s) {names}",
                      JaxmmWarning, stacklevel=4)
        keep = [j for j in range(len(raw_names)) if j not in dropped]
        fixed_names, raw_names = [fixed_names[j] for j in keep], [raw_names[j] for j in keep]
        if X is None:
            x_sources = [x_sources[j] for j in keep]
        else:
            X = X[:, keep]
    random = None if random_terms is None else _head_matrix(spec.random_text, sample)
    z_sources = None if random is None else _checked_sources(random, frame, rows, levels)
    Z = None
    if z_sources is None:
        random = _model_matrix(spec.random_text, frame, "random-effects term", spec)
        Z = np.asarray(random, dtype=np.float64)
    encoders = Encoders(fixed_spec, random.model_spec, tuple(raw_names),
                        {**_factor_levels_of(fixed_spec, frame), **_factor_levels_of(random.model_spec, frame)})
    re_names = tuple(_lme4_names([spec.display(n) for n in random.columns]))
    del random
    trials_arr = None if trials is None else _as_float(f"trials column {trials!r}", _column(data, trials, "trials"))
    offset_arr = _row_values(data, offset, "offset")
    # offset(...) terms in the formula add to offset= (as in R, where all offsets are summed)
    for expr in spec.offsets:
        values = evaluate(expr, data, f"offset({unparse(expr)})")
        offset_arr = values if offset_arr is None else offset_arr + values
    weights_arr = _row_values(data, weights, "weights")
    if check_response is not None:
        problem = check_response(y, 1.0 if trials_arr is None else trials_arr)
        if problem:
            raise DataError(f"response {spec.response!r}: {problem}")
    if pd.isna(groups).any():
        rows = np.flatnonzero(pd.isna(groups))
        raise DataError(f"grouping column {spec.group!r} has {rows.size} missing value(s) (first rows: {rows[:5].tolist()})")
    if on_columns is not None:
        if weights_arr is not None:
            _nonnegative_weights(weights_arr)  # checked before a compilation starts
        on_columns(groups, len(fixed_names), len(re_names))
    fill = PlainMatrix if defer_plain else _plain_matrix
    X = fill(x_sources, frame, levels) if X is None else X
    Z = fill(z_sources, frame, levels) if Z is None else Z
    return _Rows(X, Z, y, trials_arr, offset_arr, weights_arr, groups, tuple(fixed_names), re_names, n_dropped, data,
                 encoders)


def _info(spec, rows: _Rows, labels, layout, X, row_index=None) -> DesignInfo:
    return DesignInfo(
        fixef_names=rows.fixef_names,
        re_names=rows.re_names,
        group_name=spec.group,
        group_labels=labels,
        response=spec.response,
        layout=layout,
        n_dropped=rows.n_dropped,
        x_scale=column_scales(X),
        encoders=rows.encoders,
        row_index=rows.data.index if row_index is None else row_index,
    )


@small_pages()
def design_from_formula(spec: FormulaSpec, data, *, trials=None, offset=None, weights=None, dtype="float64",
                        bucket=False, missing="raise", check_response=None, min_chunks: int = 1,
                        host: bool = False, tile: int = TILE_ROWS, chunk_rows: int | None = None,
                        on_layout=None):
    """Evaluate a parsed formula on a table. Returns (Design, DesignInfo).

    ``missing="raise"`` names every used column with missing values; ``"drop"`` drops
    those rows (their number is ``DesignInfo.n_dropped``). ``check_response(y, trials)``
    returns a problem description or None (a family's support check), run on the host
    arrays before the design is built. ``min_chunks``, ``tile`` and ``chunk_rows`` as in
    :func:`plan_layout`;
    ``host=True`` leaves the arrays in numpy (for the caller to place, e.g. sharded).
    ``on_layout`` as in :func:`make_design`.
    """
    planned = []

    def on_columns(groups, p, q):
        # the shapes depend on the groups and the numbers of columns alone: the fit's
        # compilation (on_layout) starts before the columns are filled and moved
        planned.append(plan_design(groups, bucket=bucket, chunk_rows=chunk_rows, min_chunks=min_chunks, tile=tile,
                                   group_name=spec.group,
                                   on_shape=_announcer(on_layout, host, p, q, dtype, tile)))

    rows = _rows_from_formula(spec, data, trials=trials, offset=offset, weights=weights, missing=missing,
                              check_response=check_response, on_columns=on_columns, defer_plain=True)
    design, labels, layout = make_design(
        rows.X, rows.Z, rows.y, rows.groups, trials=rows.trials, offset=rows.offset, weights=rows.weights,
        dtype=dtype, bucket=bucket, min_chunks=min_chunks, host=host, tile=tile, chunk_rows=chunk_rows,
        plan=planned[0],
    )
    return design, _info(spec, rows, labels, layout, rows.X)


@small_pages()
def designs_by(spec: FormulaSpec, data, by: str, *, trials=None, offset=None, weights=None, dtype="float64",
               bucket=False, missing="raise", check_response=None, tile: int = TILE_ROWS):
    """One design per value of the column ``by``, padded to a common shape and stacked.
    ``tile`` as in :func:`plan_layout`.

    Returns (Design with a leading replicate axis, [DesignInfo per replicate], by values,
    number of rows dropped for missing values).
    The formula is evaluated once on the whole table, so every replicate has the same
    fixed-effect columns (factor levels included).
    """
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
        labels, gcode = unique_inverse(np.asarray(rows.groups))
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
