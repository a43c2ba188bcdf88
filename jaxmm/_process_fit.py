"""One fit over the processes of a ``jax.distributed`` job, each reading only its own groups
of a Parquet dataset (``_process_rows``).

Every process builds the design of its rows for its own devices' chunks, in one layout
the processes agree on: the same rows and group slots per chunk, so that the local blocks
are the pieces of one global array sharded over the mesh. Before the fit they agree on the
few host values a design depends on through all the rows: the factor levels, the aliased
fixed-effect columns (from the summed Gram matrix), the layout's sizes, and the group
labels; inside it only parameters and per-parameter sums cross processes, as in any
sharded fit. A problem in one process's rows is raised by every process (naming the one
that found it), so that none is left waiting in a collective (``_collective.agreed``).
"""
from __future__ import annotations

import jax
import numpy as np
import pandas as pd
from jax.sharding import NamedSharding, PartitionSpec

from ._collective import agreed, gather_arrays, gather_json, maximum, total
from ._dataset import release_table, used_columns
from ._design import _rows_from_formula
from ._engine import GROUP_AXIS, fit_one
from ._layout import GroupPlan, plan_groups, plan_in_chunks
from ._pages import small_pages
from ._place_rows import make_design
from ._sharding import to_host
from ._process_rows import own_rows
from ._types import DesignInfo, Layout, default_chunk_rows
from .errors import ArgumentError, DataError


def mesh_processes(mesh) -> tuple[int, int]:
    """(this process's first position in the mesh, devices per process), where the mesh holds
    the same number of devices of every process, each process's together."""
    owners = [d.process_index for d in mesh.devices.flat]
    per = owners.count(jax.process_index())
    blocks = [owners[k:k + per] for k in range(0, len(owners), per)] if per else []
    if not per or any(len(set(b)) != 1 or len(b) != per for b in blocks) or len({b[0] for b in blocks}) != len(blocks):
        raise ArgumentError("reading each process's own groups needs devices= to list the same number of devices of "
                            "every process, each process's together (devices=len(jax.devices()) does)")
    return owners.index(jax.process_index()), per


def _global_levels(table: pd.DataFrame, columns, group: str) -> None:
    """Every text or categorical column the model uses (but the groups) made categorical with
    the levels of all the processes' rows: a process missing a level still builds its columns."""
    for name in sorted(columns):
        values = table[name]
        if name == group or (pd.api.types.is_numeric_dtype(values.dtype)
                             and not isinstance(values.dtype, pd.CategoricalDtype)):
            continue
        seen = list(values.cat.categories) if isinstance(values.dtype, pd.CategoricalDtype) else \
            sorted(pd.unique(values.dropna().to_numpy(dtype=object)), key=str)
        if not all(isinstance(v, str) for v in seen):
            raise DataError(f"column {name!r}: a fit whose processes read their own groups takes factor columns of "
                            "text; convert its values to strings")
        everyone = gather_json(seen)
        if isinstance(values.dtype, pd.CategoricalDtype):
            levels = list(dict.fromkeys(v for share in everyone for v in share))
        else:
            levels = sorted(set().union(*everyone))
        table[name] = pd.Categorical(values, categories=levels)


def _scales(X, n_obs: int) -> tuple:
    """The SD of each fixed-effect column over all processes' rows (1 for a constant one)."""
    column = X._column if hasattr(X, "layout_sources") else (lambda j: X[:, j])
    keys = X.layout_sources if hasattr(X, "layout_sources") else range(X.shape[1])
    n = X.shape[0]
    moments = np.zeros((2, len(keys)))
    for j, key in enumerate(keys):
        values = np.broadcast_to(np.asarray(column(key), np.float64), (n,))
        moments[:, j] = values.sum(), np.dot(values, values)
    sums, squares = total(moments)
    var = squares / n_obs - (sums / n_obs) ** 2
    return tuple(float(np.sqrt(v)) if v > 1e-300 else 1.0 for v in var)


def _global_array(local: np.ndarray, mesh, position: int, per: int):
    """One process's block of an array sharded over the mesh's leading axis (its devices'
    chunks) as the global array."""
    n_blocks = mesh.devices.size // per
    shape = (local.shape[0] * n_blocks,) + local.shape[1:]
    start = (position // per) * local.shape[0]

    def piece(index):
        lo, hi, _ = index[0].indices(shape[0])
        return local[lo - start:hi - start]

    return jax.make_array_from_callback(shape, NamedSharding(mesh, PartitionSpec(GROUP_AXIS)), piece)


def _labels(labels: np.ndarray, slots: np.ndarray, group: str):
    """All processes' group labels and slots, in label order, as a one-process fit has them."""
    if labels.dtype.kind in "iuf":
        everyone = np.concatenate(gather_arrays(labels))
    else:
        everyone = np.array([v for share in gather_json([str(v) for v in labels.tolist()]) for v in share], object)
    slots = np.concatenate(gather_arrays(slots.astype(np.int64)))
    order = np.argsort(everyone, kind="stable")
    everyone, slots = everyone[order], slots[order]
    if everyone.size > 1 and np.any(everyone[1:] == everyone[:-1]):
        raise DataError(f"a group of {group!r} has rows in more than one process's share of the dataset: its label "
                        "is stored with different types in different files")
    return everyone, slots


@small_pages()
def fit_own_rows(spec, data, fam, method, mesh, *, options, dtype, bucket, tile, nagq, opt, blocks_of, one_row,
                 result):
    """The fit of ``data`` (a dataset) over ``mesh``'s processes, each reading its groups:
    ``result(out, info, design, blocks, n_obs)`` of the fit's outputs; ``blocks_of(spec, q)``
    and ``one_row(fam, design)`` as ``_fit``'s."""
    n_processes, process = jax.process_count(), jax.process_index()
    position, per = mesh_processes(mesh)
    columns = used_columns(spec, options.trials, options.offset, options.weights)

    def read():
        table = own_rows(data, columns, spec.group, process, n_processes)
        if len(table) == 0:
            raise DataError(f"process {process} of {n_processes} holds no group of {spec.group!r}: the data have "
                            "fewer groups than the job has processes, or the parts are few; use fewer processes")
        return table

    table = agreed(read)
    agreed(lambda: _global_levels(table, columns, spec.group))
    rows = agreed(lambda: _rows_from_formula(spec, table, trials=options.trials, offset=options.offset,
                                             weights=options.weights, missing=options.missing,
                                             check_response=fam.check_response, defer_plain=True, total=total))
    del table
    names = gather_json([list(rows.fixef_names), list(rows.re_names)])
    if any(n != names[0] for n in names):
        differ = next(k for k, n in enumerate(names) if n != names[0])
        raise DataError(f"the processes' rows give different model columns (process 0: {names[0]}, process "
                        f"{differ}: {names[differ]}): a numeric column in C() takes different values in their "
                        "shares; store it as text")
    local = agreed(lambda: plan_groups(rows.groups, bucket=bucket, min_chunks=per, tile=tile, group_name=spec.group,
                                       chunk_rows=default_chunk_rows(autodiff=method == "AGHQ")))
    rows_per = int(maximum(local.layout.rows_per))
    m = len(local.labels)
    trial = plan_in_chunks(local.codes, m, rows_per, tile=tile, bucket=bucket)
    groups_per, chunks = (int(v) for v in maximum([trial.groups_per, trial.shape.chunks]))
    chunks = -(-chunks // per) * per
    plan = plan_in_chunks(local.codes, m, rows_per, groups_per=groups_per, n_chunks=chunks, tile=tile)
    host, _, layout = agreed(lambda: make_design(
        rows.X, rows.Z, rows.y, rows.groups, trials=rows.trials, offset=rows.offset, weights=rows.weights,
        dtype=dtype, host=True, tile=tile, plan=GroupPlan(local.labels, local.codes, plan)))
    first_chunk = position // per * chunks
    row_shift, group_shift = first_chunk * rows_per, first_chunk * groups_per
    host = host._replace(group=host.group + np.int32(group_shift),
                         tile_group=None if host.tile_group is None else host.tile_group + np.int32(group_shift))
    design = jax.tree_util.tree_map(lambda a: _global_array(np.asarray(a), mesh, position, per), host)
    n_obs, n_dropped = (int(v) for v in total(np.array([layout.row_slot.size, rows.n_dropped], np.int64)))
    all_labels, group_slot = _labels(np.asarray(local.labels), layout.group_slot + group_shift, spec.group)
    if all_labels.size < 2:
        raise DataError(f"grouping factor {spec.group!r} has a single level; a random effect needs at least two groups")
    n_chunks = chunks * (mesh.devices.size // per)
    global_layout = Layout(layout.row_slot + row_shift, group_slot, design.X.shape[0], design.counts.shape[0],
                           n_chunks)
    if n_obs == all_labels.size:
        whys = gather_json(one_row(fam, host))
        if all(whys):
            raise DataError(f"every group of {spec.group!r} has a single row: {whys[0]} (lme4 refuses such a model too)")
    info = DesignInfo(fixef_names=rows.fixef_names, re_names=rows.re_names, group_name=spec.group,
                      group_labels=tuple(all_labels.tolist()), response=spec.response, layout=global_layout,
                      n_dropped=n_dropped, x_scale=_scales(rows.X, n_obs), encoders=rows.encoders,
                      row_index=rows.data.index)
    del rows, host
    release_table()
    blocks = blocks_of(spec, design.Z.shape[1])
    out = fit_one(design, fam, method == "REML", n_chunks, blocks, nagq, opt=opt, mesh=mesh)
    out = {k: to_host(v) for k, v in out.items()}
    return result(out, info, design, blocks, n_obs)
