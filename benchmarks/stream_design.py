"""The streamed design's choices, each against its alternative: building a one-term design
from a Parquet dataset (jaxmm/_stream_design.py), seconds and peak memory.

    python benchmarks/stream_design.py [--problem binomial-q2-10M-balanced] [--parts 16] [--repeats 3]
                                       [--row-group-rows N] [--variants ...]
                                       [--out benchmarks/results/stream_design.md]

The problem's table is written by ``jaxmm.partition_dataset`` (hash parts of the group, as a
job's processes read it); ``--row-group-rows N`` rewrites each part in row groups of N rows, as
writers that flush small batches leave them. Each variant runs in a fresh process: the two passes (plan, place)
in float32 on the default device, then the design's arrays are waited for; reported are the
medians over ``--repeats`` processes of the seconds and of the peak RSS. The variants undo
one choice each:
- *unaligned*: the design's host arrays from ``np.full`` (16 bytes past a page), which JAX's
  CPU client copies, instead of 64-byte aligned ones it takes as they are;
- *batch by batch*: each record batch evaluated alone, instead of gathered into tables of
  about 1M rows;
- *huge pages*: numpy's transparent huge-page hint left on while the arrays are built.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from provenance import commit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, jax
import jaxmm, jaxmm._pages, jaxmm._stream_design as S, jaxmm._stream_batches as B
from jaxmm._formula import parse_formula
variant = {variant!r}
if variant == "unaligned":
    S.aligned_full = lambda shape, fill, dtype: np.full(shape, fill, dtype)
    S._aligned_copy = lambda values: np.array(values)
elif variant == "batch by batch":
    import pyarrow as pa
    def one_at_a_time(dataset, columns, share=None):
        for batch in dataset.to_batches(columns=columns, batch_size=B.BATCH_ROWS, batch_readahead=1,
                                        fragment_readahead=1):
            yield pa.Table.from_batches([batch]), None
    B.batches = one_at_a_time
elif variant == "huge pages":
    jaxmm._pages._SET_HUGEPAGE = None
spec = parse_formula({formula!r})
start = time.perf_counter()
plan = S.plan_streamed(spec, {folder!r}, tile=4, bucket=True)
planned = time.perf_counter()
design, info = plan.place(dtype="float32", tile=4)
jax.block_until_ready(design)
print(json.dumps({{"plan": planned - start, "place": time.perf_counter() - planned,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

VARIANTS = ("as built", "unaligned", "batch by batch", "huge pages")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="binomial-q2-10M-balanced")
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--row-group-rows", type=int)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--out", default=str(HERE / "results" / "stream_design.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    import jaxmm
    from problems import generate, get

    frame, formula, _ = generate(get(args.problem))
    folder = Path(tempfile.mkdtemp(prefix="jaxmm_stream_")) / "parts"
    jaxmm.partition_dataset(frame, "g", args.parts, folder)
    if args.row_group_rows:
        import pyarrow.parquet as pq

        for file in folder.rglob("*.parquet"):
            pq.write_table(pq.read_table(file), file, row_group_size=args.row_group_rows)
    n = len(frame)
    del frame
    results = {}
    for _ in range(args.repeats):  # the variants interleaved, so that drift in the machine hits all
        for variant in args.variants:
            code = CHILD.format(root=str(ROOT), folder=str(folder), formula=formula, variant=variant)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            results.setdefault(variant, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(variant, results[variant][-1], flush=True)
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("plan", "place", "peak_mb")}
           for v, rs in results.items()}
    base = med[args.variants[0]]
    lines = ["# The streamed design's choices", "",
             f"`python benchmarks/stream_design.py --problem {args.problem} --parts {args.parts} --repeats "
             f"{args.repeats}" + (f" --row-group-rows {args.row_group_rows}" if args.row_group_rows else "")
             + f" --variants {' '.join(repr(v) for v in args.variants)}` at {commit()}, {machine()}. {n:,} rows, "
             f"`{formula}`, float32, written by `partition_dataset` in {args.parts} parts"
             + (f", rewritten in row groups of {args.row_group_rows} rows" if args.row_group_rows else "")
             + f". Medians of {args.repeats} fresh processes per variant.", "",
             f"| variant | plan s | place s | place / {args.variants[0]} | peak RSS MB | memory / {args.variants[0]} |",
             "|---|---:|---:|---:|---:|---:|"]
    for variant, m in med.items():
        lines.append(f"| {variant} | {m['plan']:.2f} | {m['place']:.2f} | {m['place'] / base['place']:.2f} | "
                     f"{m['peak_mb']:,.0f} | {m['peak_mb'] / base['peak_mb']:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
