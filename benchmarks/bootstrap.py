"""A 500-replicate parametric bootstrap of sleepstudy (ML): jaxmm ``res.bootstrap`` against
lme4's ``bootMer``, same run. Both start from a fitted model, whose fit is not timed. On the
CPU jaxmm refits the replicates one by one through the program that compiled the fit; on an
accelerator in one vmapped, compiled call (see ``jaxmm/_simulate.py``).

    python benchmarks/bootstrap.py [--n 500] [--repeats 3] [--cold-runs 3] [--r-runs 3] [--cache-runs 3]
                                   [--out benchmarks/results/bootstrap.md]

jaxmm *cold* is the first bootstrap in a fresh process (compilation included), the median
over ``--cold-runs`` processes; *warm* the median of the repeats in this process. bootMer is
timed inside R with ``system.time``, the median of ``--r-runs`` runs. *cached* times fresh
processes whose persistent compilation cache (``jaxmm.enable_compilation_cache``) an
earlier process filled (a script's second run); cold runs never use a cache. The bootstrap SDs
of the estimates are compared: two independent bootstraps of n replicates estimate the
same SD, each with a Monte Carlo standard error of about SD/sqrt(2(n-1)).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold-runs", type=int, default=3, help="fresh processes timing the cold bootstrap")
    ap.add_argument("--r-runs", type=int, default=3, help="runs of bootMer")
    ap.add_argument("--cache-runs", type=int, default=3,
                    help="fresh processes timed with the persistent compilation cache filled (0: skip)")
    ap.add_argument("--out", default=str(HERE / "results" / "bootstrap.md"))
    ap.add_argument("--child-cold", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if not args.child_cold:
        os.environ.pop("JAXMM_CACHE_DIR", None)  # cold means compiled in this run

    import jax
    import jaxmm

    res = jaxmm.fit("Reaction ~ Days + (Days | Subject)", jaxmm.load_example("sleepstudy"), method="ML")
    t = time.perf_counter()
    boot = res.bootstrap(args.n, seed=1)
    cold_first = time.perf_counter() - t
    if args.child_cold:
        print(json.dumps({"cold": cold_first}))
        return
    from replicates import cached_in_fresh_processes, cold_in_fresh_process

    cold_all = [cold_first] + [cold_in_fresh_process(["--n", str(args.n)], script=__file__)
                               for _ in range(args.cold_runs - 1)]
    cold = statistics.median(cold_all)
    cached_all = cached_in_fresh_processes(["--n", str(args.n)], args.cache_runs, script=__file__)
    warm_all = []
    for k in range(args.repeats):
        t = time.perf_counter()
        res.bootstrap(args.n, seed=2 + k)
        warm_all.append(time.perf_counter() - t)
    warm = statistics.median(warm_all)

    lme4, note = None, None
    rscript = shutil.which("Rscript")
    if rscript is None:
        note = "Rscript not found: bootMer skipped"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "boot.csv"
            seconds = []
            for _ in range(args.r_runs):
                proc = subprocess.run([rscript, str(HERE / "bootstrap_bootmer.R"), str(args.n), "1", str(out)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    note = f"bootMer failed: {proc.stderr.strip().splitlines()[-1:]}"
                    break
                meta = json.loads(proc.stdout.strip().splitlines()[-1])
                seconds.append(meta["seconds"])
                if lme4 is None:
                    lme4 = (meta, pd.read_csv(out))
            if note is None:
                lme4 = (dict(lme4[0], seconds=statistics.median(seconds), runs=seconds), lme4[1])
            else:
                lme4 = None

    lines = [
        "# Parametric bootstrap: jaxmm `res.bootstrap` vs lme4 `bootMer`",
        "",
        f"- **Date:** {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {platform.machine()}, {os.cpu_count()} logical CPUs; JAX backend {jax.default_backend()}; "
        f"jax {jax.__version__}, jaxmm {jaxmm.__version__}",
        f"- **Command:** `python benchmarks/bootstrap.py --n {args.n} --repeats {args.repeats} "
        f"--cold-runs {args.cold_runs} --r-runs {args.r_runs} --cache-runs {args.cache_runs}`",
        f"- **Model:** sleepstudy, `Reaction ~ Days + (Days | Subject)`, ML; {args.n} replicates",
        "",
        "| engine | seconds | bootMer / jaxmm |",
        "|---|---:|---:|",
    ]
    ratio = lambda t: f"{lme4[0]['seconds'] / t:.1f}x" if lme4 else "—"
    lines.append(f"| jaxmm, cold (the first bootstrap in a fresh process, after the untimed fit; its compiles included; "
                 f"median of {len(cold_all)} fresh processes: "
                 f"{', '.join(f'{t:.2f}' for t in cold_all)}) | {cold:.2f} | {ratio(cold)} |")
    if cached_all:
        lines.append(f"| jaxmm, fresh process with the persistent compilation cache filled "
                     f"(`jaxmm.enable_compilation_cache()`; tracing included, the compiled programs read from disk; "
                     f"median of {len(cached_all)}: {', '.join(f'{t:.2f}' for t in cached_all)}) | "
                     f"{statistics.median(cached_all):.2f} | {ratio(statistics.median(cached_all))} |")
    lines.append(f"| jaxmm, warm (median of {args.repeats}: {', '.join(f'{t:.2f}' for t in warm_all)}) | "
                 f"{warm:.3f} | {ratio(warm)} |")
    converged = boot.attrs["converged"]
    if lme4:
        meta, t = lme4
        lines.append(f"| lme4 {meta['lme4']} bootMer (median of {len(meta['runs'])}: "
                     f"{', '.join(f'{t:.2f}' for t in meta['runs'])}) | {meta['seconds']:.2f} | 1 |")
        lines += ["", "Bootstrap SDs (jaxmm vs bootMer; Monte Carlo SE of each about SD/sqrt(2(n−1))):", "",
                  "| estimate | jaxmm SD | bootMer SD | difference / MC SE of the difference |", "|---|---:|---:|---:|"]
        for ours, theirs in [("(Intercept)", "intercept"), ("Days", "days"), ("sigma", "sigma")]:
            a, b = boot.loc[converged, ours].std(), t[theirs].std()
            mc = np.sqrt(a ** 2 + b ** 2) / np.sqrt(2 * (args.n - 1))
            lines.append(f"| {ours} | {a:.4f} | {b:.4f} | {(a - b) / mc:+.2f} |")
    else:
        lines += ["", note]
    lines += ["", f"jaxmm refits converged: {int(converged.sum())} of {args.n}.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    if lme4:
        from replicates import compare, record_section

        record_section(HERE / "results" / "suite.md", "bootstrap", "## Parametric bootstrap (sleepstudy, ML)",
                       f"{args.n} replicates: jaxmm cold {cold:.2f} s ({compare(lme4[0]['seconds'], cold)} than "
                       f"bootMer), warm {warm:.3f} s ({compare(lme4[0]['seconds'], warm)}); bootMer "
                       f"{lme4[0]['seconds']:.2f} s, same run, {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}. "
                       "Details: `results/bootstrap.md`.")


if __name__ == "__main__":
    main()
