"""A one-term fit's design streamed from a Parquet dataset, record batch by record batch: no
table of all the rows is ever built, only the design's own arrays.

Two passes over the model's columns (``_stream_batches``). The first numbers the groups,
finds the rows with missing values and samples a row of every factor level; the layout is
planned from the group codes alone, and formulaic's encodings (factor levels, contrasts)
come from the sample. The second pass evaluates the model's columns batch by batch with
those encodings, checks them, and writes each batch's values, already in the design's
precision, to their rows of the design; the aliased fixed-effect columns are found from the
Gram matrix summed over the batches.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._column_stats import aliased_columns
from ._dataset import open_dataset, release_table, used_columns
from ._design import _rows_from_formula
from ._layout import GroupPlan, layout_slots, plan_shapes
from ._pages import small_pages
from ._place_rows import _DEFAULTS, _FILLS, aligned_full, group_counts, row_groups, to_device
from ._row_numbers import fitted_index, renumbered
from ._stream_batches import agreed_sample, batch_values, dataset_columns, level_columns, row_options, scan, tables
from ._stream_state import argument_columns, arguments_of, learnt_state
from ._types import Design, DesignInfo, abstract_design
from ._warn import warn
from .errors import JaxmmWarning


class StreamedPlan(NamedTuple):
    """The first pass's outcome: everything the design's shapes depend on."""

    spec: object
    dataset: object
    columns: list
    options: dict           # trials, offset, weights, missing, check_response
    groups: GroupPlan
    kept: np.ndarray | None  # the dataset rows fitted, where some were dropped (missing="drop")
    sample: object          # _design._Rows of the sampled rows: names and encodings
    n_dropped: int
    share: tuple | None = None  # (group column, process, processes): one process's rows

    @property
    def re_names(self) -> tuple:
        return self.sample.re_names

    def abstract(self, dtype, tile: int) -> Design:
        shape = self.groups.layout.shape
        return abstract_design(shape.n_rows, shape.n_groups, len(self.sample.fixef_names), len(self.re_names),
                               dtype, tile)

    def place(self, *, dtype="float64", host: bool = False, tile: int, total=None):
        return place_streamed(self, dtype=dtype, host=host, tile=tile, total=total)


@small_pages()
def plan_streamed(spec, data, *, trials=None, offset=None, weights=None, bucket=False, missing="raise",
                  check_response=None, min_chunks: int = 1, tile: int, chunk_rows: int | None = None,
                  share=None, layout_of=None, agree_levels=None, learn_state=None) -> StreamedPlan:
    """The first pass over a dataset: group codes, missing rows, levels, and the layout.

    For one process's share of a job's rows (``_process_fit``): ``share`` = (group column,
    process, processes) keeps the rows whose group hashes to the process; ``layout_of(codes,
    m)`` plans the layout the processes agree on; ``agree_levels({column: levels})`` returns
    every text column's levels over all the processes; ``learn_state(specs, arguments)`` the
    stateful transforms' state from all the processes' rows (``_stream_state.shared_state``)."""
    dataset = open_dataset(data)
    schema = dataset.schema
    arrays = {"offset": offset, "weights": weights}
    columns = dataset_columns(dataset, used_columns(spec, trials, offset, weights) | {spec.group}, arrays)
    levels = level_columns(spec, schema)
    learnt = argument_columns(spec)
    found = scan(dataset, columns, groups=[spec.group], levels=levels, report=columns, missing=missing, share=share,
                 arrays=arrays, arguments=arguments_of(spec, learnt) if learnt else None)
    all_labels, codes = found.labels[0], found.codes[0]
    layout = (layout_of(codes, all_labels.size) if layout_of is not None else
              plan_shapes(codes, all_labels.size, bucket=bucket, chunk_rows=chunk_rows, min_chunks=min_chunks,
                          tile=tile))
    sample = agreed_sample(found, levels, schema, agree_levels)
    options = dict(trials=trials, offset=offset, weights=weights, missing=missing, check_response=check_response)
    # the sample gives names and encodings, its transforms' state learnt from all the rows;
    # arrays of offset=/weights= are read with the batches
    state = (learn_state or learnt_state)([spec], found.arguments) if learnt else None
    sampled = _rows_from_formula(spec, sample, trials=trials, offset=offset if isinstance(offset, str) else None,
                                 weights=weights if isinstance(weights, str) else None, aliasing=False, state=state)
    kept, n_dropped = found.kept, found.n_rows - codes.size
    del sample, found
    release_table()  # the batches' and the sample's pages
    return StreamedPlan(spec, dataset, columns, options, GroupPlan(all_labels, codes, layout), kept, sampled,
                        n_dropped, share)


@small_pages()
def place_streamed(plan: StreamedPlan, *, dtype="float64", host: bool = False, tile: int, total=None):
    """The second pass: the design's arrays filled batch by batch, and its DesignInfo.
    ``total``: the sum of an array over a job's processes, where the plan is one's share
    (aliased columns and column scales are then those of all the rows)."""
    spec, options, sample = plan.spec, plan.options, plan.sample
    layout = layout_slots(plan.groups.layout)
    kind = np.dtype(dtype)
    p, q = len(sample.fixef_names), len(sample.re_names)
    given = {"trials": options["trials"] is not None or spec.trials_expr is not None,
             "offset": options["offset"] is not None or bool(spec.offsets), "weights": options["weights"] is not None}
    # aligned, the filled arrays become the device's buffers on the CPU without a copy
    arrays = {"X": aligned_full((layout.n_rows, p), 0.0, kind), "Z": aligned_full((layout.n_rows, q), 0.0, kind),
              "y": aligned_full(layout.n_rows, _FILLS["y"], kind)}
    # trials and offset not given are their padding value; weights are 1 on rows, 0 on padding
    arrays.update({k: aligned_full(layout.n_rows, _FILLS[k], kind) for k, on in given.items() if on or k == "weights"})
    gram, sums, done, numbers = np.zeros((p, p)), np.zeros(p), 0, []
    enc = sample.encoders
    for at, table in tables(plan.dataset, plan.columns, plan.share, kept=plan.kept):
        values = renumbered(lambda: batch_values(spec, enc, table, row_options(options, at.start, table.index)),
                         at, table.index)
        slots = layout.row_slot[done:done + len(table)]
        for name, v in values.items():
            arrays[name][slots] = v
        if not given["weights"]:
            arrays["weights"][slots] = _DEFAULTS["weights"]
        X = values["X"]
        gram += X.T @ X
        sums += X.sum(axis=0)
        done += len(table)
        if plan.share is not None:  # the rows' numbers in the dataset, not among the share's
            numbers.append(at.data_rows(table.index))
    del table, values, X
    release_table()
    n_all = done
    if total is not None:
        summed = total(np.concatenate([gram.ravel(), sums, [float(done)]]))
        gram, sums, n_all = summed[:p * p].reshape(p, p), summed[p * p:p * p + p], float(summed[-1])
    dropped = aliased_columns(None, gram=gram)
    fixef_names, encoders = sample.fixef_names, enc
    if dropped:
        names = [fixef_names[j] for j in dropped]
        warn(f"fixed-effect model matrix is rank deficient; dropping aliased column(s) {names}",
             JaxmmWarning)
        keep = [j for j in range(p) if j not in dropped]
        arrays["X"] = _aligned_copy(arrays["X"][:, keep])
        fixef_names = tuple(fixef_names[j] for j in keep)
        encoders = enc._replace(fixed_kept=tuple(enc.fixed_kept[j] for j in keep))
        gram, sums = gram[np.ix_(keep, keep)], sums[keep]
    n_obs = done
    var = np.diag(gram) / n_all - (sums / n_all) ** 2
    x_scale = tuple(float(np.sqrt(v)) if v > 1e-300 else 1.0 for v in var)
    group, tile_group = (None if a is None else _aligned_copy(a) for a in row_groups(layout, plan.groups.codes, tile))
    to_array = (lambda a, kind: a) if host else to_device
    counts = _aligned_copy(group_counts(layout, plan.groups.codes).astype(kind))
    columns = {}
    for name in ("X", "Z", "y", "trials", "offset", "weights"):
        values = arrays.pop(name, None)
        columns[name] = to_array(aligned_full(layout.n_rows, _FILLS[name], kind) if values is None else values, dtype)
        del values
    design = Design(**columns, group=to_array(group, np.int32), counts=to_array(counts, dtype),
                    tile_group=None if tile_group is None else to_array(tile_group, np.int32))
    release_table()  # the batches' tables sit in reference cycles; Arrow's pool keeps their pages
    info = DesignInfo(fixef_names=fixef_names, re_names=sample.re_names, group_name=spec.group,
                      group_labels=tuple(plan.groups.labels.tolist()), response=spec.response, layout=layout,
                      n_dropped=plan.n_dropped, x_scale=x_scale, encoders=encoders,
                      row_index=fitted_index(n_obs, plan.kept, numbers if plan.share is not None else None))
    return design, info


def _aligned_copy(values: np.ndarray) -> np.ndarray:
    out = aligned_full(values.shape, 0, values.dtype)
    out[...] = values
    return out
