"""A one-term fit's design streamed from a Parquet dataset, record batch by record batch: no
table of all the rows is ever built, only the design's own arrays.

Two passes over the model's columns. The first numbers the groups (each batch's labels,
then all batches' merged), finds the rows with missing values, and notes the first row of
every value of each column that is not floating point (factors' levels); the layout is
planned from the group codes alone. formulaic's encodings (factor levels, contrasts) then
come from a sample of the rows that holds every level. The second pass evaluates the model's
columns batch by batch with those encodings, checks them, and writes each batch's values,
already in the design's precision, to their rows of the design; the aliased fixed-effect
columns are found from the Gram matrix summed over the batches.

Formulas with transforms whose state is learnt from all the rows (``center``, ``scale``,
``standardize``, ``poly``) are read as a table instead (``_dataset.read_columns``).
"""
from __future__ import annotations

import re
import warnings
from typing import NamedTuple

import numpy as np
import pandas as pd

from ._column_stats import aliased_columns
from ._dataset import hash_parts, open_dataset, read_error, release_table
from ._design import _row_arrays, _rows_from_formula
from ._formula_eval import model_frame
from ._grouping import _mixed_groups, unique_inverse
from ._layout import GroupPlan, layout_slots, plan_shapes
from ._model_matrix import _HEAD_ROWS, for_formulaic
from ._pages import small_pages
from ._place_rows import _DEFAULTS, _FILLS, aligned_full, group_counts, row_groups, to_device
from ._table import _as_float, _group_column, _response, missing_error, missing_report
from ._types import Design, DesignInfo, abstract_design
from .errors import DataError, JaxmmWarning

BATCH_ROWS = 1 << 20
# A column with more distinct values than this is no factor: its values are not sampled.
_MOST_LEVELS = 100_000
_STATEFUL = re.compile(r"\b(center|scale|standardize|poly)\(")


def streamable(spec, offset, weights) -> bool:
    """Whether a dataset fit's design can be streamed: transforms without state learnt from
    all the rows, and offset=/weights= given as columns (an array is aligned to a table)."""
    return (not _STATEFUL.search(f"{spec.fixed_text} {spec.random_text}")
            and not any(v is not None and not isinstance(v, str) for v in (offset, weights)))


def _shifted(step, start: int):
    """``step()``, its DataError's "first rows: [...]" counted from the dataset's first row."""
    try:
        return step()
    except DataError as exc:
        if not start:
            raise
        shift = lambda m: "first rows: [" + ", ".join(str(int(v) + start) for v in m.group(1).split(", ")) + "]"
        raise DataError(re.sub(r"first rows: \[([\d, ]+)\]", shift, str(exc))) from None


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
                  share=None, layout_of=None, agree_levels=None) -> StreamedPlan:
    """The first pass over a dataset: group codes, missing rows, levels, and the layout.

    For one process's share of a job's rows (``_process_fit``): ``share`` = (group column,
    process, processes) keeps the rows whose group hashes to the process; ``layout_of(codes,
    m)`` plans the layout the processes agree on; ``agree_levels({column: levels})`` returns
    every text column's levels over all the processes."""
    dataset = open_dataset(data)
    schema = dataset.schema
    named = [c for c in (trials, offset, weights) if isinstance(c, str)]
    wanted = spec.columns | {spec.group} | set(named)
    absent = sorted(c for c in wanted if c not in schema.names)
    if absent:
        raise DataError(f"column(s) {absent} are not in the dataset (its columns: {schema.names[:20]})")
    columns = [c for c in schema.names if c in wanted]
    import pyarrow as pa

    factors = [c for c in columns if c != spec.group and not pa.types.is_floating(schema.field(c).type)]
    seen = {c: set() for c in factors}  # the values met so far; None past _MOST_LEVELS
    labels, codes, dropped, samples, start, kept_rows = [], [], [], [], 0, 0
    batch = table = None
    unfilled = {} if missing == "raise" else None  # column -> [rows, first rows], over the batches
    for batch in _batches(dataset, columns, share):
        table = batch.to_pandas(split_blocks=True, self_destruct=True)
        n = len(table)
        drop, report = missing_report(table, columns, {}, start)
        for name, count, first in report if unfilled is not None else ():  # as one table's report
            so_far = unfilled.setdefault(name, [0, []])
            so_far[0] += count
            so_far[1] = (so_far[1] + first)[:5]
        if drop.any():
            dropped.append(np.flatnonzero(drop) + start)
            table = table.loc[~drop]
        groups = _group_column(table, spec.group)
        try:
            batch_labels, batch_codes = unique_inverse(groups)
        except TypeError:
            raise DataError(_mixed_groups(groups, spec.group)) from None
        labels.append(np.asarray(batch_labels))
        codes.append(batch_codes.astype(np.int32))  # a batch's codes index its own labels
        # the sample: the first rows, and a row of every value of each factor when first met
        rows = set(table.index[:max(0, _HEAD_ROWS - kept_rows)])
        for c in factors:
            firsts = None if seen[c] is None else table[c].drop_duplicates()
            if firsts is None or len(seen[c]) + len(firsts) > _MOST_LEVELS:
                seen[c] = None
                continue
            for value, row in zip(firsts.tolist(), firsts.index.tolist()):
                if value not in seen[c]:
                    seen[c].add(value)
                    rows.add(row)
        if rows:
            samples.append(table.loc[sorted(rows)])
        kept_rows += len(table)
        start += n
    del batch, table
    release_table()
    if unfilled:
        raise missing_error([(name, count, first) for name, (count, first) in unfilled.items()])
    dropped = np.concatenate(dropped) if dropped else np.zeros(0, np.int64)
    if start == dropped.size:
        raise DataError(("the data have no rows" if share is None else f"process {share[1]} of {share[2]} holds no "
                         f"group of {spec.group!r}: fewer groups than processes, or few parts; use fewer processes")
                        if not start else f"every row has a missing value in the model's columns {columns}")
    kept = np.delete(np.arange(start), dropped) if dropped.size else None
    all_labels, where = unique_inverse(np.concatenate(labels))
    bounds = np.cumsum([0] + [lab.size for lab in labels])
    # intp codes, as a table's: the layout's radix order ran slower on int32 codes
    codes = np.concatenate([where[bounds[b]:bounds[b + 1]][c] for b, c in enumerate(codes)]) \
        if codes else np.zeros(0, np.intp)
    layout = (layout_of(codes, all_labels.size) if layout_of is not None else
              plan_shapes(codes, all_labels.size, bucket=bucket, chunk_rows=chunk_rows, min_chunks=min_chunks,
                          tile=tile))
    sample = pd.concat(samples)
    if agree_levels is not None:  # a text level another process holds is a category here too
        text = [c for c in factors if pa.types.is_string(schema.field(c).type) or pa.types.is_large_string(
            schema.field(c).type) or pa.types.is_dictionary(schema.field(c).type)]
        levels = agree_levels({c: sorted(map(str, seen[c] or ())) for c in text})
        for c in text:
            sample[c] = pd.Categorical(sample[c].astype(object), categories=levels[c])
    options = dict(trials=trials, offset=offset, weights=weights, missing=missing, check_response=check_response)
    sampled = _rows_from_formula(spec, sample, trials=trials, offset=offset, weights=weights, aliasing=False)
    del sample, samples
    release_table()  # the batches' and the sample's pages
    return StreamedPlan(spec, dataset, columns, options, GroupPlan(all_labels, codes, layout), kept, sampled,
                        int(dropped.size), share)


def _batches(dataset, columns, share=None):
    """The dataset's rows as Arrow tables of about BATCH_ROWS rows: files written in many
    small row groups (``partition_dataset``'s parts hold one per written batch) are read as
    large tables, since each table's evaluation has a fixed cost (formulaic's, ~4 ms)."""
    import pyarrow as pa

    pending, rows = [], 0
    try:
        # Arrow reads ahead 16 batches of 4 files by default, each held in its pool (0.4 GB
        # at 10M rows); one ahead was as fast here
        for batch in dataset.to_batches(columns=columns, batch_size=BATCH_ROWS, batch_readahead=1,
                                        fragment_readahead=1):
            if share is not None:  # the rows of this process's groups
                group, process, n_processes = share
                batch = batch.filter(pa.array(hash_parts(batch.column(group), n_processes) == np.uint64(process)))
            pending.append(batch)
            rows += batch.num_rows
            if rows >= BATCH_ROWS:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file of the dataset that cannot be read
        raise read_error(exc) from None
    if pending:
        yield pa.Table.from_batches(pending)


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
    gram, sums, done, start = np.zeros((p, p)), np.zeros(p), 0, 0
    enc = sample.encoders
    for batch in _batches(plan.dataset, plan.columns, plan.share):
        table = batch.to_pandas(split_blocks=True, self_destruct=True)
        n = len(table)
        if plan.kept is not None:
            mine = plan.kept[np.searchsorted(plan.kept, start):np.searchsorted(plan.kept, start + n)] - start
            table = table.iloc[mine]
        values = _shifted(lambda: _batch_values(spec, enc, table, options), start)
        slots = layout.row_slot[done:done + len(table)]
        for name, v in values.items():
            arrays[name][slots] = v
        if not given["weights"]:
            arrays["weights"][slots] = _DEFAULTS["weights"]
        X = values["X"]
        gram += X.T @ X
        sums += X.sum(axis=0)
        done += len(table)
        start += n
    del batch, table, values, X
    release_table()
    n_all = done
    if total is not None:
        summed = total(np.concatenate([gram.ravel(), sums, [float(done)]]))
        gram, sums, n_all = summed[:p * p].reshape(p, p), summed[p * p:p * p + p], float(summed[-1])
    dropped = aliased_columns(None, gram=gram)
    fixef_names, encoders = sample.fixef_names, enc
    if dropped:
        names = [fixef_names[j] for j in dropped]
        warnings.warn(f"fixed-effect model matrix is rank deficient; dropping aliased column(s) {names}",
                      JaxmmWarning, stacklevel=5)
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
                      row_index=pd.RangeIndex(n_obs) if plan.kept is None else pd.Index(plan.kept))
    return design, info


def _aligned_copy(values: np.ndarray) -> np.ndarray:
    out = aligned_full(values.shape, 0, values.dtype)
    out[...] = values
    return out


def _batch_values(spec, enc, table: pd.DataFrame, options) -> dict:
    """One batch's model columns (with the fit's encodings) and row values, checked."""
    frame = for_formulaic(model_frame(spec, table, enc.levels))
    try:
        fixed = enc.fixed.get_model_matrix(frame, na_action="raise")
        random = enc.random.get_model_matrix(frame, na_action="raise")
    except Exception as exc:  # noqa: BLE001 - formulaic raises many types: one clear jaxmm error instead
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot evaluate the model's columns: {spec.display(msg)}") from None
    y = _as_float(f"response {spec.response!r}", _response(spec, table))
    trials, offset, weights = _row_arrays(spec, table, y, options["trials"], options["offset"], options["weights"],
                                          options["check_response"])
    out = {"X": _columns("X", fixed, enc.fixed_kept), "Z": _columns("Z", random, random.columns), "y": y}
    out.update({k: v for k, v in (("trials", trials), ("offset", offset), ("weights", weights)) if v is not None})
    return out


def _columns(what: str, frame: pd.DataFrame, names) -> np.ndarray:
    """formulaic's model matrix as one float64 array, filled column by column (pandas'
    conversion of the whole frame interleaves its blocks, several times slower), checked finite."""
    out = np.empty((len(frame), len(names)))
    for j, name in enumerate(names):
        out[:, j] = frame[name].to_numpy(dtype=np.float64)
    return _as_float(what, out)
