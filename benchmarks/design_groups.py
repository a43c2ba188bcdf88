"""A design's host time by the kind of its grouping column: ids sorted, ids in random order,
strings, and a categorical column of those strings.

Only the design is timed: ``jaxmm.fit`` is called with its compiled fit and the
compilation that starts during the design replaced by no-ops, and the design's arrays
are waited for on the device. Bernoulli rows, ``y ~ x + (x | g)``, 10 rows a group on
average. The first call of each kind includes the layout program's compilation; the
others are warm. It calls only ``jaxmm.fit``, so an older checkout put first on
``PYTHONPATH`` is measured the same way (run it from a folder other than the repository).

    python benchmarks/design_groups.py --rows 1e6,1e7 --kinds random,categorical --repeats 3

``--factor strings`` (or ``categorical``) adds a fixed-effect factor ``f`` of 10 levels,
``y ~ x + f + (x | g)``. The process's peak RSS is printed after each line; it is the peak
over the whole process, so time one configuration a process to read it.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import time
import threading
from pathlib import Path

KINDS = ("sorted", "random", "strings", "categorical")


def table(rows: int, kind: str, seed: int = 0, factor: str = "none"):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = rng.integers(0, rows // 10, rows)
    if kind == "sorted":
        g = np.sort(g)
    elif kind in ("strings", "categorical"):
        g = np.char.add("s", g.astype(str)).astype(object)
        if kind == "categorical":
            g = pd.Categorical(g)
    columns = {"y": rng.integers(0, 2, rows), "x": rng.normal(size=rows), "g": g}
    if factor != "none":
        f = np.array([f"level{j}" for j in range(10)], dtype=object)[rng.integers(0, 10, rows)]
        columns["f"] = pd.Categorical(f) if factor == "categorical" else f
    return pd.DataFrame(columns)


class _Designed(Exception):
    pass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="1e6")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--repeats", type=int, default=3, help="warm designs after the first")
    ap.add_argument("--factor", default="none", choices=("none", "strings", "categorical"),
                    help="a fixed-effect factor of 10 levels")
    args = ap.parse_args(argv)

    import jax
    import jaxmm
    from jaxmm import _fit

    def designed(design, *a, **k):
        jax.block_until_ready(design)
        raise _Designed

    _fit.fit_one = designed
    def no_compile(*a, **k):
        # what the fit waits on: already set (older checkouts ignore it)
        done = threading.Event()
        done.set()
        return done

    _fit.prefetch_one = no_compile
    rev = subprocess.run(["git", "-C", str(Path(jaxmm.__file__).parent), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    print(f"jaxmm from {Path(jaxmm.__file__).parent} ({rev or 'no git'}); backend {jax.default_backend()}")
    formula = "y ~ x + (x | g)" if args.factor == "none" else "y ~ x + f + (x | g)"
    print(f"{formula}; fixed-effect factor: {args.factor}")
    print("| rows | grouping column | first s | warm s (median) | warm s (each) | peak RSS MB |")
    print("|---:|---|---:|---:|---|---:|")
    for rows in (int(float(r)) for r in args.rows.split(",")):
        for kind in args.kinds.split(","):
            data = table(rows, kind, factor=args.factor)
            seconds = []
            for _ in range(1 + args.repeats):
                t = time.perf_counter()
                try:
                    jaxmm.fit(formula, data, family="binomial")
                except _Designed:
                    pass
                seconds.append(time.perf_counter() - t)
            warm = seconds[1:]
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"| {rows:,} | {kind} | {seconds[0]:.2f} | {statistics.median(warm):.2f} | "
                  f"{', '.join(f'{s:.2f}' for s in warm)} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
