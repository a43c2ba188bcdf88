"""The design pytree, the host-side records that go with it, and the sizes of its layout.

:class:`Design` is a NamedTuple of arrays only, so compiled functions are shared by every
dataset of the same shape; the numeric core imports this module and nothing of the table
edge.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:  # annotations only: the numeric core never imports pandas through this module
    import pandas as pd


class Design(NamedTuple):
    """One dataset's arrays, rows sorted by group (a pytree; ``design`` makes it).

    Attributes
    ----------
    X : jax.Array
        (N, p) fixed-effects model matrix.
    Z : jax.Array
        (N, q) random-effects model matrix.
    y : jax.Array
        (N,) response (successes for binomial).
    trials : jax.Array
        (N,) binomial trials (ones otherwise).
    offset : jax.Array
        (N,) known part of the linear predictor.
    weights : jax.Array
        (N,) per-row weights. For the exact LMM they are prior weights (row variance σ²/w);
        in the Laplace likelihood they multiply each row's log density. Weight 0 removes a row
        in both, which is how padded rows are made inert.
    group : jax.Array
        (N,) int32 group code in [0, m).
    counts : jax.Array
        (m,) rows per group (padding excluded).
    tile_group : jax.Array or None
        None, or (T,) int32 group of each tile of N/T consecutive rows: each tile lies inside
        one group, so per-group sums are sums within tiles, then over tiles.

    Examples
    --------
    >>> import jaxmm
    >>> d = jaxmm.fit_example("sleepstudy").design
    >>> d.X.shape[1], d.Z.shape[1]
    (2, 2)
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
        """The number of group slots, m (padded ones included in a fit's design).

        Examples
        --------
        >>> import jaxmm, numpy as np
        >>> d = jaxmm.design(np.ones((4, 1)), np.ones((4, 1)), np.zeros(4), [0, 0, 1, 1])
        >>> d.n_groups
        2
        """
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


def abstract_design(n: int, m: int, p: int, q: int, dtype, tile: int) -> Design:
    """The shapes and dtypes of the :class:`Design` of ``n`` rows and ``m`` group slots
    that :func:`make_design` builds (on the default device), as ``jax.ShapeDtypeStruct``
    leaves."""
    kind = jax.dtypes.canonicalize_dtype(dtype)
    array = lambda *shape, kind=kind: jax.ShapeDtypeStruct(shape, kind)
    return Design(X=array(n, p), Z=array(n, q), y=array(n), trials=array(n), offset=array(n), weights=array(n),
                  group=array(n, kind=jnp.int32), counts=array(m),
                  tile_group=array(n // tile, kind=jnp.int32) if tile > 1 else None)


# Rows per chunk above which a design is laid out in several group-aligned chunks. A fit
# then processes one chunk at a time, so its temporary memory is bounded by the chunk, not
# the data. The Laplace fit's passes are fused loops (tiles and the written gradient) with
# about 100 bytes a row of temporaries, so chunks of 4M rows; one chunk where the data fit
# saves the chunk loop's compile (docs/performance.md).
CHUNK_ROWS = 1 << 22


# Fits differentiated by autodiff through the rows (AGHQ, and the replicates of a by= fit,
# which has no chunks) hold about 650 bytes a row of reverse-mode temporaries.
AUTODIFF_CHUNK_ROWS = 1 << 19


# On a GPU the chunks run one after another, each a handful of kernels, so small chunks
# leave the device idle between launches; its memory (tens of GB) holds far larger ones.
# 2**24 rows is about 11 GB of temporaries at 650 bytes a row.
GPU_CHUNK_ROWS = 1 << 24


# Rows per tile. Fits lay each group out in whole tiles of this many rows, so the passes
# over the rows sum within (T, TILE_ROWS) tiles, then over tiles. XLA:CPU fuses the family
# kernel and every per-group sum into one reduction over the tile axis, where the
# segment sums of single rows each materialised the kernel's outputs; 4 rows a tile made
# the fastest passes (docs/performance.md). Padding costs at most TILE_ROWS - 1 rows a group.
TILE_ROWS = 4


def default_chunk_rows(autodiff: bool = False) -> int:
    """Rows per chunk on the default backend: :data:`CHUNK_ROWS` on the CPU
    (:data:`AUTODIFF_CHUNK_ROWS` for a fit differentiated through the rows),
    :data:`GPU_CHUNK_ROWS` on accelerators."""
    if jax.default_backend() != "cpu":
        return GPU_CHUNK_ROWS
    return AUTODIFF_CHUNK_ROWS if autodiff else CHUNK_ROWS
