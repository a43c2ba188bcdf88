"""A fit from a Parquet dataset against the in-memory path: time and peak memory, one run.

    python benchmarks/dataset_memory.py [--problem binomial-q2-10M-balanced] [--parts 8]
                                        [--text-groups] [--dtype float64] [--crossed]
                                        [--out benchmarks/results/dataset_memory.md]

The problem's table (benchmarks/problems.py) is written once as a directory of ``--parts``
Parquet files (``--text-groups``: the group codes as text ids, "g0000123", as real data often
hold them; ``--crossed``: the rows regrouped at random into 1,000 groups g crossed with 100
items, fitted as ``y ~ x1 + x2 + (1 | g) + (1 | item)``, gaussian by ML, whose rows a
several-term fit streams in input order, jaxmm/_stream_rows.py). Each path then runs in a fresh process: *in memory* reads the whole dataset with
``pandas.read_parquet`` and fits the table; *dataset* passes the directory to ``fit``, which
streams the model's columns batch by batch into the design (jaxmm/_stream_design.py). Reported: seconds from the read
to the fitted result (compile included), the child's peak RSS, and the log-likelihoods.
"""
from __future__ import annotations

import argparse
import json
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
import jaxmm
import pandas as pd
start = time.perf_counter()
data = {folder!r} if {mode!r} == "dataset" else pd.read_parquet({folder!r})
res = jaxmm.fit({formula!r}, data, **{kwargs!r})
print(json.dumps({{"seconds": time.perf_counter() - start, "loglik": res.loglik,
                   "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="binomial-q2-10M-balanced")
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--text-groups", action="store_true")
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--crossed", action="store_true")
    ap.add_argument("--out", default=str(HERE / "results" / "dataset_memory.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from problems import generate, get

    frame, formula, kwargs = generate(get(args.problem))
    kwargs = {**kwargs, "dtype": args.dtype}
    if args.crossed:  # a gaussian response of two crossed random intercepts
        rng = np.random.default_rng(5)
        n = len(frame)
        g, item = rng.integers(0, 1000, n), rng.integers(0, 100, n)
        eta = 2 + 0.5 * frame["x1"] - 0.3 * frame["x2"] + rng.normal(0, 0.8, 1000)[g] + rng.normal(0, 0.5, 100)[item]
        frame = pd.DataFrame({"g": g, "item": item, "x1": frame["x1"], "x2": frame["x2"],
                              "y": np.round(eta + rng.standard_normal(n), 6)})
        formula, kwargs = "y ~ x1 + x2 + (1 | g) + (1 | item)", {"family": "gaussian", "method": "ML",
                                                                 "dtype": args.dtype}
    if args.text_groups:
        frame["g"] = np.char.add("g", np.char.zfill(frame["g"].to_numpy().astype(str), 7))
    folder = Path(tempfile.mkdtemp(prefix="jaxmm_dataset_"))
    for k, rows in enumerate(np.array_split(np.arange(len(frame)), args.parts)):
        pq.write_table(pa.Table.from_pandas(frame.iloc[rows], preserve_index=False), folder / f"part{k}.parquet")
    n = len(frame)
    del frame
    rows = []
    for mode in ("in memory", "dataset"):
        code = CHILD.format(root=str(ROOT), folder=str(folder), mode=mode, formula=formula, kwargs=kwargs)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(mode, result, flush=True)
        rows.append((mode, result))
    base = rows[0][1]
    lines = ["# A fit from a Parquet dataset against the in-memory path", "",
             f"`python benchmarks/dataset_memory.py --problem {args.problem} --parts {args.parts}"
             f"{' --text-groups' if args.text_groups else ''}{' --crossed' if args.crossed else ''} --dtype "
             f"{args.dtype}` at {commit()}, {machine()}. {n:,} rows, "
             f"`{formula}` {kwargs}, written as {args.parts} Parquet files. One fresh process per path: "
             "seconds from reading to the fitted result (compile included), the process's peak RSS.", "",
             "| path | seconds | peak RSS MB | time / in memory | memory / in memory | loglik |",
             "|---|---:|---:|---:|---:|---:|"]
    for mode, r in rows:
        lines.append(f"| {mode} | {r['seconds']:.1f} | {r['peak_mb']:,.0f} | {r['seconds'] / base['seconds']:.2f} | "
                     f"{r['peak_mb'] / base['peak_mb']:.2f} | {r['loglik']:.4f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
