"""``devices=`` for several random-effect terms: the rows (a GLMM's), the cells and the pairs
of cells split over the devices, everything indexed by level replicated.

A several-term fit's work per evaluation is over three long axes: the rows (η, the family's
terms and the Gram sums of a GLMM), the cells (a first-factor level meeting a level of another
term: C₁⁻¹B) and the pairs of cells (the Schur complement's sums, the largest part of a large
fit). Each is padded to a multiple of the device count with entries that add zero, and placed
with a ``NamedSharding`` along its leading axis; the arrays indexed by level (the blocks of the
first term, the dense Schur complement, θ) are replicated. The program is the one-device
program: XLA's partitioner turns its sums over a split axis into per-device sums and an
all-reduce, so the estimates equal a one-device fit's to rounding.

Padding: a cell of first-factor level 0, columns r (the padding column every scatter drops) and
zero Z₁ᵀZ₂ has C₁⁻¹B = 0; a pair of that cell with itself adds 0 into the dropped column; a
row with mask 0 has kernel, score and weight 0 (``CrossedRows.mask``), η 0 and y = 1, in every
family's support.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ._crossed_laplace import CrossedRows
from ._crossed_lmm import CrossedStats, Terms
from ._sharding import place

_CELL_FIELDS = ("cell_level", "cell_term", "cell_cols", "Z1tZ2")
PAIR_FIELDS = ("pair_a", "pair_b")
_ROW_FIELDS = ("y", "X", "offset", "trials", "Z1", "g1", "rc", "rv", "mask")


def padded(a, total: int, fill):
    """``a`` with rows of ``fill`` after its own, to ``total`` rows."""
    a = np.asarray(a)
    out = np.full((total,) + a.shape[1:], fill, a.dtype)
    out[:a.shape[0]] = a
    return out


def _multiple(n: int, k: int, at_least: int = 0) -> int:
    return -(-(n + at_least) // k) * k


def pad_cells(stats: CrossedStats, terms: Terms, n_devices: int) -> tuple[CrossedStats, int]:
    """(the statistics with their cells, pairs and row cells padded to multiples of
    ``n_devices``, the index of a padding cell). At least one padding cell is added: the
    padding pairs are pairs of it with itself."""
    c = stats.cell_level.shape[0]
    cells = _multiple(c, n_devices, at_least=1)
    fills = dict(cell_level=0, cell_term=0, cell_cols=terms.rest, Z1tZ2=0.0)
    out = {k: padded(getattr(stats, k), cells, fills[k]) for k in _CELL_FIELDS}
    pairs = _multiple(stats.pair_a.shape[0], n_devices)
    # pair_a stays sorted (the Schur sums gather with indices_are_sorted): c is the largest index
    out.update({k: padded(getattr(stats, k), pairs, c) for k in PAIR_FIELDS})
    return stats._replace(**out), c


def pad_rows(rows: CrossedRows, terms: Terms, n_devices: int) -> CrossedRows:
    """The rows (and their cells and pairs) padded to multiples of ``n_devices``; the padding
    rows have mask 0."""
    cells, pad_cell = pad_cells(rows.cells, terms, n_devices)
    return padded_rows(rows._replace(cells=cells), terms, _multiple(rows.y.shape[0], n_devices), pad_cell)


def padded_rows(rows: CrossedRows, terms: Terms, total: int, pad_cell: int) -> CrossedRows:
    """The rows padded to ``total`` with rows of mask 0 in the cell ``pad_cell``."""
    n = rows.y.shape[0]
    fills = dict(y=1.0, X=0.0, offset=0.0, trials=1.0, Z1=0.0, g1=0, rc=terms.rest, rv=0.0)
    out = {k: padded(getattr(rows, k), total, v) for k, v in fills.items()}
    out["mask"] = padded(np.ones(n, np.asarray(rows.y).dtype), total, 0.0)
    cells = rows.cells._replace(row_cell=padded(rows.cells.row_cell, total, pad_cell))
    return rows._replace(cells=cells, **out)


def pad_stats(stats: CrossedStats, terms: Terms, n_devices: int) -> CrossedStats:
    """An exact LMM's statistics with their cells, pairs and row cells padded."""
    out, pad_cell = pad_cells(stats, terms, n_devices)
    total = _multiple(stats.row_cell.shape[0], n_devices)
    return out._replace(row_cell=padded(stats.row_cell, total, pad_cell))


def place_stats(stats: CrossedStats, mesh: Mesh) -> CrossedStats:
    """Pairs and row cells split over the mesh; the rest, the cells included, replicated (a
    device's pairs gather from every cell: split cells were all-gathered at every
    factorisation)."""
    split = set(PAIR_FIELDS + ("row_cell",))
    return CrossedStats(*(place(getattr(stats, k), mesh, k in split) for k in CrossedStats._fields))


def place_rows(rows: CrossedRows, mesh: Mesh) -> CrossedRows:
    """The rows split over the mesh (their cells and pairs as :func:`place_stats`)."""
    out = {k: place(getattr(rows, k), mesh) for k in _ROW_FIELDS}
    return CrossedRows(cells=place_stats(rows.cells, mesh), **out)


def n_real_rows(rows: CrossedRows):
    """The number of rows that are not padding, as the rows' float type."""
    return jnp.asarray(rows.X.shape[0], rows.X.dtype) if rows.mask is None else jnp.sum(rows.mask)
