"""Several random-effect terms fitted over the processes of a ``jax.distributed`` job, each
reading only its own rows of a Parquet dataset.

A several-term fit needs its rows only for sums: the exact LMM's statistics (per level,
per cell of two levels, the dense blocks of the other terms) and, for a GLMM, every
iteration's sums over rows. So any split of the rows serves; process p of P reads the rows
whose value of the first term's factor (its first column) hashes to it, whole files where
the dataset was written by ``partition_dataset`` on a term's factor. The processes then agree
on what depends on all the rows: every term's levels (sorted, as one process numbers them),
whether the terms nest, the fixed part's levels, transforms' state and aliased columns
(``_stream_rows``). Their statistics are summed (the cells: a process's cells of each first-
factor level, merged by key and summed, give the one-process fit's cells in its order), and
a GLMM's rows stay where they were read: each process's rows are its devices' block of the
rows split over the mesh, pointing at the agreed cells. The estimates equal a one-process
fit's to rounding.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import numpy as np

from ._collective import agreed, array_total, gather_arrays, gather_json, maximum, total
from ._crossed_laplace import CrossedRows
from ._crossed_lmm import CrossedStats, Terms, cell_pairs
from ._crossed_shard import PAIR_FIELDS, pad_cells, padded, padded_rows
from ._dataset import open_dataset
from ._process_fit import agree_text_levels, global_array, mesh_processes, same_columns
from ._process_rows import hash_partition_files, own_parts
from ._sharding import place
from ._stream_rows import streamed_rows
from ._stream_state import shared_state
from .errors import DataError

_SUMMED = ("Z1tZ1", "Z1tX", "Z1ty", "Z2tX", "Z2ty", "XtX", "Xty", "yty", "n", "half_log_w")


def own_rows(specs, data, term_factors: list, **options) -> list:
    """This process's rows (``_stream_rows.streamed_rows`` of its share), ``term_factors`` the
    terms' factors (tuples of columns), first term first: the rows of its parts where the
    dataset was partitioned on one of them, otherwise those whose first factor's first column
    hashes to it. A problem in one process's rows is raised by all."""
    process, n_processes = jax.process_index(), jax.process_count()
    source, share = open_dataset(data), (term_factors[0][0], process, n_processes)
    for columns in term_factors:
        parts = hash_partition_files(data, columns[0]) if len(columns) == 1 else None
        if parts is not None:
            source, share = own_parts(data, parts, process, n_processes), None
            break
    return agreed(lambda: streamed_rows(specs, source, share=share, agree_levels=agree_text_levels,
                                        learn_state=functools.partial(shared_state, total=total), total=total,
                                        same_columns=same_columns, **options))


def agreed_levels(labels: np.ndarray, codes: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(every process's levels of a factor, sorted as one process sorts them; this process's
    rows' codes into them), from its own sorted ``labels`` and ``codes``."""
    kinds = gather_json(labels.dtype.str if labels.dtype.kind in "biufMm" else "text")
    if any(k == "text" for k in kinds):
        if not all(k == "text" for k in kinds):
            raise DataError(f"grouping factor {label!r} holds numbers in some processes' rows and text in others': "
                            "store it with one type in every file")
        everyone = np.array(sorted(set().union(*gather_json([str(v) for v in labels.tolist()]))), object)
        where = {v: i for i, v in enumerate(everyone.tolist())}
        local = np.array([where[str(v)] for v in labels.tolist()], np.int64)
    else:
        common = np.result_type(*[np.dtype(k) for k in kinds])
        wire = np.int64 if common.kind in "Mm" else common  # datetimes travel as their integers
        mine = labels.astype(common)
        gathered = np.concatenate(gather_arrays(mine.view(wire) if common.kind in "Mm" else mine))
        everyone = np.unique(gathered.view(common) if common.kind in "Mm" else gathered)
        local = np.searchsorted(everyone, mine)
    return everyone, local[np.asarray(codes)]


def distinct(keys: np.ndarray) -> int:
    """How many distinct int64 keys every process's rows hold together."""
    return int(np.unique(np.concatenate(gather_arrays(np.unique(keys)))).size)


def cell_keys(stats: CrossedStats, terms: Terms) -> np.ndarray:
    """Each cell's key: its first-factor level and its first column among the r (which names
    its term and level). Sorted by key, cells are in ``crossed_stats``'s order."""
    return np.asarray(stats.cell_level, np.int64) * (terms.rest + 1) + np.asarray(stats.cell_cols)[:, 0]


def merged_cells(keys: list, blocks: list, terms: Terms) -> tuple[dict, np.ndarray]:
    """(the cells of all the rows, in ``crossed_stats``'s order, each Z₁ᵀZ₂ summed over the
    parts that hold its rows; their keys) from every part's cell ``keys`` and ``blocks``."""
    r, qbar = terms.rest, terms.q_rest
    cells, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    Z1tZ2 = np.zeros((cells.size, terms.q[0], qbar))
    np.add.at(Z1tZ2, inverse, np.concatenate(blocks))
    level, first = cells // (r + 1), cells % (r + 1)
    term = np.searchsorted(np.asarray(terms.offsets()), first, side="right") - 1
    within = np.arange(qbar)
    cols = np.where(within < np.asarray(terms.q[1:])[term][:, None], first[:, None] + within, r)
    pair_a, pair_b = cell_pairs(level, terms.m[0])
    return dict(cell_level=level, cell_term=term, cell_cols=cols, Z1tZ2=Z1tZ2, pair_a=pair_a, pair_b=pair_b), cells


def _shared_cells(local: CrossedStats, terms: Terms):
    """(the cells of every process's rows; this process's rows' cells among them)."""
    key = cell_keys(local, terms)
    shape = (-1, terms.q[0], terms.q_rest)
    blocks = [b.reshape(shape) for b in gather_arrays(np.asarray(local.Z1tZ2, np.float64).ravel())]
    cells, keys = merged_cells(gather_arrays(key), blocks, terms)
    return cells, np.searchsorted(keys, key)[np.asarray(local.row_cell)]


def part_parents(codes, terms: Terms) -> list:
    """A nested chain's parent of each level (its level in the next term) that some rows
    show, −1 for the others: every part's, the largest, give all the rows' parents."""
    out = []
    for k in range(1, len(codes) - 1):
        parent = np.full(terms.m[k], -1, np.int64)
        parent[np.asarray(codes[k])] = np.asarray(codes[k + 1])
        out.append(parent)
    return out


def _parents(codes, terms: Terms) -> tuple:
    return tuple(np.max(np.stack(gather_arrays(p)), axis=0) for p in part_parents(codes, terms))


def _rows_per_process(n: int, per: int) -> int:
    """The rows every process's block holds: the most any process has, as many per device."""
    most = int(maximum(np.array([n], np.int64))[0])
    return -(-max(most, 1) // per) * per


def _shared(local: CrossedStats, codes, terms: Terms, mesh, **fields) -> tuple[CrossedStats, int, np.ndarray]:
    """(``local`` with the cells of every process's rows, the chain's parents and ``fields``,
    its cells and pairs padded for the mesh; the padding cell; this process's rows' cells)."""
    cells, row_cell = _shared_cells(local, terms)
    stats = local._replace(**cells, **fields, parents=_parents(codes, terms) if terms.nested else ())
    stats, pad_cell = pad_cells(stats, terms, mesh.size)
    return stats, pad_cell, row_cell


def _placed(stats: CrossedStats, mesh, position: int, per: int) -> CrossedStats:
    """``stats`` on the mesh: pairs split, this process's row cells its devices' block, the
    rest replicated."""
    placed = {k: place(getattr(stats, k), mesh, k in PAIR_FIELDS) for k in CrossedStats._fields if k != "row_cell"}
    return CrossedStats(**placed, row_cell=global_array(np.asarray(stats.row_cell), mesh, position, per))


def shared_stats(local: CrossedStats, codes, terms: Terms, mesh) -> CrossedStats:
    """The exact LMM's statistics of all the processes' rows, from this process's ``local``
    ones, placed on the mesh: pairs and row cells split, the rest replicated."""
    position, per = mesh_processes(mesh)
    sums = {k: array_total(getattr(local, k)) for k in _SUMMED}
    sums["Z2tZ2"] = tuple(map(array_total, local.Z2tZ2)) if terms.nested else array_total(local.Z2tZ2)
    stats, pad_cell, row_cell = _shared(local, codes, terms, mesh, **sums)
    row_cell = padded(row_cell, _rows_per_process(row_cell.shape[0], per), pad_cell)
    return _placed(stats._replace(row_cell=row_cell), mesh, position, per)


def shared_rows(local: CrossedRows, codes, terms: Terms, mesh) -> CrossedRows:
    """A GLMM's rows over the processes: this process's ``local`` rows as its devices' block
    of the rows split over the mesh, the cells of all the rows replicated (pairs split)."""
    position, per = mesh_processes(mesh)
    # the Gram pieces are each iteration's (_crossed_laplace._gram); the rows' count is all of them
    own = local.cells
    gram = dict(Z1tZ1=np.zeros(own.Z1tZ1.shape), n=array_total(own.n),
                Z2tZ2=tuple(np.zeros(b.shape) for b in own.Z2tZ2) if terms.nested else np.zeros(own.Z2tZ2.shape))
    stats, pad_cell, row_cell = _shared(own, codes, terms, mesh, **gram)
    rows = padded_rows(local._replace(cells=stats._replace(row_cell=row_cell)), terms,
                       _rows_per_process(local.y.shape[0], per), pad_cell)
    split = lambda a: global_array(np.asarray(a), mesh, position, per)
    return rows._replace(**{k: split(getattr(rows, k)) for k in rows._fields if k != "cells"},
                         cells=_placed(rows.cells, mesh, position, per))


class Job(NamedTuple):
    """A several-term fit's placement over a job's ``mesh`` whose processes each hold their own
    rows (``_crossed_engine.estimate``'s ``job``)."""

    mesh: object

    def stats(self, local: CrossedStats, codes, terms: Terms) -> CrossedStats:
        return shared_stats(local, codes, terms, self.mesh)

    def rows(self, local: CrossedRows, codes, terms: Terms) -> CrossedRows:
        return shared_rows(local, codes, terms, self.mesh)

    def design(self, local: CrossedRows, weights, codes, terms: Terms):
        """(the rows as :meth:`rows`, their weights split alike, 0 on the padding rows)."""
        rows = self.rows(local, codes, terms)
        position, per = mesh_processes(self.mesh)
        padded = np.zeros(rows.y.shape[0] * per // self.mesh.size)
        padded[:local.y.shape[0]] = weights
        return rows, global_array(padded, self.mesh, position, per)
