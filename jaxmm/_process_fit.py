"""One fit over the processes of a ``jax.distributed`` job, each reading only its own groups
of a Parquet dataset (``_process_rows``), streamed into its design (``_stream_design``).

Every process builds the design of its rows for its own devices' chunks, in one layout
the processes agree on: the same rows and group slots per chunk, so that the local blocks
are the pieces of one global array sharded over the mesh. Before the fit they agree on the
few host values a design depends on through all the rows: the text factors' levels, the
aliased fixed-effect columns and column scales (from the summed Gram matrix), the layout's
sizes, and the group labels; inside it only parameters and per-parameter sums cross
processes, as in any sharded fit. A problem in one process's rows is raised by every process
(naming the one that found it), so that none is left waiting in a collective
(``_collective.agreed``).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from ._collective import agreed, gather_arrays, gather_json, maximum, total
from ._engine import GROUP_AXIS, fit_one
from ._layout import plan_in_chunks, plan_shapes
from ._process_rows import hash_partition_files, own_parts
from ._sharding import to_host
from ._stream_design import plan_streamed
from ._stream_state import shared_state
from ._types import Layout, default_chunk_rows
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


def global_array(local: np.ndarray, mesh, position: int, per: int):
    """One process's block of an array sharded over the mesh's leading axis (its devices'
    chunks) as the global array."""
    n_blocks = mesh.devices.size // per
    shape = (local.shape[0] * n_blocks,) + local.shape[1:]
    start = (position // per) * local.shape[0]

    def piece(index):
        lo, hi, _ = index[0].indices(shape[0])
        return local[lo - start:hi - start]

    return jax.make_array_from_callback(shape, NamedSharding(mesh, PartitionSpec(GROUP_AXIS)), piece)


def same_columns(names: list) -> None:
    """Every process's model column ``names`` must be the same: a DataError in all otherwise."""
    everyone = gather_json(names)
    if any(n != everyone[0] for n in everyone):
        differ = next(k for k, n in enumerate(everyone) if n != everyone[0])
        raise DataError(f"the processes' rows give different model columns (process 0: {everyone[0]}, process "
                        f"{differ}: {everyone[differ]}): a numeric column in C() takes different values in their "
                        "shares; store it as text")


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


def agree_text_levels(levels: dict) -> dict:
    """Every process's text levels of each column, merged (sorted, as one table's would be)."""
    everyone = gather_json(levels)
    return {c: sorted(set().union(*(theirs[c] for theirs in everyone))) for c in levels}


def _agreed_layout(codes, m, *, per: int, bucket: bool, tile: int, chunk_rows: int):
    """This process's layout in chunks of the rows and group slots every process agrees on, as
    many per device in every process."""
    local = plan_shapes(codes, m, bucket=bucket, chunk_rows=chunk_rows, min_chunks=per, tile=tile)
    rows_per = int(maximum(local.rows_per))
    trial = plan_in_chunks(codes, m, rows_per, tile=tile, bucket=bucket)
    groups_per, chunks = (int(v) for v in maximum([trial.groups_per, trial.shape.chunks]))
    return plan_in_chunks(codes, m, rows_per, groups_per=groups_per, n_chunks=-(-chunks // per) * per, tile=tile)


def fit_own_rows(spec, data, fam, method, mesh, *, options, dtype, bucket, tile, nagq, opt, blocks_of, one_row,
                 result):
    """The fit of ``data`` (a dataset) over ``mesh``'s processes, each reading its groups:
    ``result(out, info, design, blocks, n_obs)`` of the fit's outputs; ``blocks_of(spec, q)``
    and ``one_row(fam, design)`` as ``_fit``'s."""
    n_processes, process = jax.process_count(), jax.process_index()
    position, per = mesh_processes(mesh)
    parts = hash_partition_files(data, spec.group)
    if parts is not None:  # whole files: the parts k with k mod processes = this process
        source, share = own_parts(data, parts, process, n_processes), None
    else:  # every batch, keeping the rows of this process's groups
        source, share = data, (spec.group, process, n_processes)
    layout_of = functools.partial(_agreed_layout, per=per, bucket=bucket, tile=tile,
                                  chunk_rows=default_chunk_rows(autodiff=method == "AGHQ"))
    plan = agreed(lambda: plan_streamed(
        spec, source, trials=options.trials, offset=options.offset, weights=options.weights, missing=options.missing,
        check_response=fam.check_response, tile=tile, share=share, layout_of=layout_of, agree_levels=agree_text_levels,
        learn_state=functools.partial(shared_state, total=total)))
    same_columns([list(plan.sample.fixef_names), list(plan.re_names)])
    host, local = agreed(lambda: plan.place(dtype=dtype, host=True, tile=tile, total=total))
    layout, groups = local.layout, plan.groups.layout
    chunks, rows_per, groups_per = groups.shape.chunks, groups.rows_per, groups.groups_per
    first_chunk = position // per * chunks
    row_shift, group_shift = first_chunk * rows_per, first_chunk * groups_per
    host = host._replace(group=host.group + np.int32(group_shift),
                         tile_group=None if host.tile_group is None else host.tile_group + np.int32(group_shift))
    design = jax.tree_util.tree_map(lambda a: global_array(np.asarray(a), mesh, position, per), host)
    n_obs, n_dropped = (int(v) for v in total(np.array([layout.row_slot.size, plan.n_dropped], np.int64)))
    all_labels, group_slot = _labels(np.asarray(plan.groups.labels), layout.group_slot + group_shift, spec.group)
    if all_labels.size < 2:
        raise DataError(f"grouping factor {spec.group!r} has a single level; a random effect needs at least two groups")
    n_chunks = chunks * (mesh.devices.size // per)
    global_layout = Layout(layout.row_slot + row_shift, group_slot, design.X.shape[0], design.counts.shape[0],
                           n_chunks)
    if n_obs == all_labels.size:
        whys = gather_json(one_row(fam, host))
        if all(whys):
            raise DataError(f"every group of {spec.group!r} has a single row: {whys[0]} (lme4 refuses such a model too)")
    info = dataclasses.replace(local, group_labels=tuple(all_labels.tolist()), layout=global_layout,
                               n_dropped=n_dropped)
    del plan, host
    blocks = blocks_of(spec, design.Z.shape[1])
    out = fit_one(design, fam, method == "REML", n_chunks, blocks, nagq, opt=opt, mesh=mesh)
    out = {k: to_host(v) for k, v in out.items()}
    return result(out, info, design, blocks, n_obs)
