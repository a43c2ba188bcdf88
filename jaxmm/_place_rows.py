"""Placing a table's rows in the padded design arrays: on the host with numpy, or, for large
data, by a compiled program on the device (which also fills plain model matrices there)."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._grouping import _is_sorted
from ._layout import GroupPlan, layout_slots, plan_groups, tile_groups
from ._pages import small_pages
from ._plain_matrix import PlainMatrix
from ._table import _as_float
from ._types import TILE_ROWS, Design, Layout
from .errors import DataError


# Rows from which a design is padded by a compiled program (``_lay_out``) rather than by
# numpy on the host. Padding on the host writes every padded array into fresh host memory,
# whose page faults dominate a large design's host time; the device lays the rows out in
# milliseconds. The layout program compiles for each new number of rows, which costs more
# than the host work below a few million rows on the CPU (docs/performance.md).
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


def aligned_full(shape, fill, dtype) -> np.ndarray:
    """``np.full`` at a 64-byte aligned address. JAX's CPU client takes such an array as a
    device buffer without copying it; numpy's large arrays sit 16 bytes past a page, and are
    copied (at 10M rows a float64 design held twice)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(size + 64, np.uint8)  # fresh pages are zero: a fill of 0 writes nothing
    start = (-raw.ctypes.data) % 64
    out = raw[start:start + size].view(dtype).reshape(shape)
    if fill != 0:
        out[...] = fill
    return out


def to_device(values, dtype=None):
    """A host array on the default device, as ``dtype`` (canonicalised: float32 for float64
    when x64 is off). ``jax.device_put`` rather than ``jnp.asarray``: the latter compiles a
    small program for every new shape it copies, where device_put only copies (docs/performance.md)."""
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
    # padding rows belong to the last group slot of their chunk
    pad_group = (jnp.arange(n_rows, dtype=jnp.int32) // rows_per_chunk) * groups_per_chunk + groups_per_chunk - 1
    group = pad_group.at[row_slot].set(row_group, indices_are_sorted=sorted_rows, unique_indices=True,
                                       mode="promise_in_bounds")
    tile_group = None
    if tile > 1:
        tile_group = group[::tile]
        # A broadcast, not jnp.repeat(..., total_repeat_length=n_rows): that form builds its
        # gather indices by two cumsums over constants, which XLA:GPU constant-folds in its
        # slow evaluator (minutes of compile at 10M rows).
        group = jnp.broadcast_to(tile_group[:, None], (tile_group.shape[0], tile)).reshape(n_rows)
    return out, group, tile_group


def _plain_columns(names, placed, placed_codes, n_rows: int, dtype):
    """The (n_rows, len(names)) matrix of a :class:`PlainMatrix` from its placed sources:
    ``placed`` (column name, or None for the intercept -> values) and ``placed_codes``
    (factor column -> level codes; a name (column, code) is the indicator of that level).

    Written as one elementwise expression of the sources, each broadcast over the columns it
    fills, so that XLA computes the matrix in one loop. Stacked column by column, each
    indicator was materialised before the copy into the matrix, and a factor multiplied the
    layout program's temporaries (docs/performance.md).
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


def _nonnegative_weights(weights) -> np.ndarray:
    weights = _as_float("weights", weights)
    if (weights < 0).any():
        rows = np.flatnonzero(weights < 0)
        raise DataError(f"weights has {rows.size} negative value(s) (first rows: {rows[:5].tolist()})")
    if weights.size and not (weights > 0).any():
        raise DataError("weights are zero on every row: no row informs the fit")
    return weights


def group_counts(layout: Layout, codes: np.ndarray) -> np.ndarray:
    """(n_groups,) rows of each group slot (0 in padding slots)."""
    counts = np.zeros(layout.n_groups)
    counts[layout.group_slot] = np.bincount(codes, minlength=layout.group_slot.size)
    return counts


def row_groups(layout: Layout, codes: np.ndarray, tile: int):
    """(group slot of each design row, group of each tile or None): padding rows belong to
    the last group slot of their chunk, and with tiles, to the group of their tile."""
    padding_group = np.repeat(np.arange(layout.chunks) * (layout.n_groups // layout.chunks)
                              + layout.n_groups // layout.chunks - 1, layout.n_rows // layout.chunks)
    group = padding_group.astype(np.int32)
    group[layout.row_slot] = layout.group_slot[codes]
    if tile > 1:
        tile_group, group = tile_groups(group, tile)
        return group, tile_group
    return group, None


@small_pages()
def make_design(X, Z, y, groups, *, trials=None, offset=None, weights=None, dtype=jnp.float64,
                bucket: bool = False, chunk_rows: int | None = None, size=None, min_chunks: int = 1,
                host: bool = False, tile: int = TILE_ROWS,
                device_layout: bool | None = None, plan: GroupPlan | None = None):
    """Build a :class:`Design` from arrays. Returns (design, group_labels, layout).

    ``tile`` rows per tile (:data:`TILE_ROWS`); 1 lays the rows out without tiles.

    ``bucket=True`` pads rows and group slots up to a coarse ladder of sizes
    (:func:`bucket_size`) so that datasets of similar size share one compiled fit.
    ``size`` and ``min_chunks`` as in :func:`_layout.plan_shapes`. ``host=True`` leaves the arrays
    in numpy (to be stacked with others before one transfer to the device).
    ``device_layout``: pad with a compiled program; None chooses it for large data
    (:data:`DEVICE_LAYOUT_ROWS`, :data:`CPU_DEVICE_LAYOUT_ROWS`).
    ``plan``: the :class:`_layout.GroupPlan` of ``groups`` (:func:`_layout.plan_groups`),
    where the caller has it (a fit starts compiling from its shapes:
    :func:`_types.abstract_design`); the options above that it fixed are then ignored.
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
        plan = plan_groups(groups, bucket=bucket, chunk_rows=chunk_rows, size=size, min_chunks=min_chunks, tile=tile)
    labels, codes, layout = plan.labels, plan.codes, layout_slots(plan.layout)
    counts = group_counts(layout, codes)
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
    # Sorted rows in one chunk land on the first n rows: slices then replace a scatter
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

    group, tile_group = row_groups(layout, codes, tile)
    design = Design(
        **{name: place(values, _FILLS[name]) for name, values in given.items()},
        group=to_array(group, jnp.int32),
        counts=to_array(counts.astype(np.dtype(dtype)), dtype),
        tile_group=None if tile_group is None else to_array(tile_group, jnp.int32),
    )
    return design, tuple(labels.tolist()), layout
