"""Wide fixed effects: y ~ x + C(f) + (1 | g) on 50k Bernoulli rows and 500 groups, f of
10 to 2,000 levels (p = levels + 1), jaxmm cold (a fresh process, compile included) and warm.

    python benchmarks/wide_fixed_effects.py --levels 10,100,500,2000 --r-timeout 1800 --out benchmarks/results/wide.md

Each p runs in its own process: one cold fit, then ``--repeats`` warm fits (the median is
reported). With ``--r-timeout S`` (seconds; 0 skips them) glmer and glmmTMB fit the same
rows from a CSV file (``fit_r.R``, ``factor(f)``), each in its own Rscript process, and
stop after S seconds; ``--r-engines`` picks them (``lme4,glmmTMB`` by default).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS, GROUPS = 50_000, 500


def make_data(levels: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = rng.integers(0, GROUPS, ROWS)
    f = np.r_[np.arange(levels), rng.integers(0, levels, ROWS - levels)]  # every level present
    x = rng.normal(size=ROWS)
    eta = -0.5 + 0.5 * x + rng.normal(0, 0.3, levels)[f] + rng.normal(0, 0.8, GROUPS)[g]
    y = (rng.random(ROWS) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "f": f, "g": g})


def r_fit(engine: str, csv: Path, out: Path, timeout: float) -> dict:
    """One glmer or glmmTMB fit by fit_r.R (time of the fit alone), or the timeout it ran into."""
    script = Path(__file__).with_name("fit_r.R")
    try:
        subprocess.run(["Rscript", str(script), engine, "binomial", "y ~ x + factor(f) + (1 | g)", str(csv), str(out)],
                       capture_output=True, text=True, check=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"timeout_s": timeout}
    res = json.loads(out.read_text())
    return {"time_s": res["time_s"], "loglik": res["loglik"], "converged": res["converged"]}


def child(levels: int, repeats: int) -> dict:
    import warnings

    import jaxmm

    data = make_data(levels)
    formula = "y ~ x + C(f) + (1 | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        res = jaxmm.fit(formula, data, family="binomial")
        cold = time.perf_counter() - start
        warm = []
        for _ in range(repeats):
            start = time.perf_counter()
            jaxmm.fit(formula, data, family="binomial")
            warm.append(time.perf_counter() - start)
    return dict(levels=levels, p=len(res.fixef), cold_s=cold, warm_s=statistics.median(warm), warm_all=warm,
                loglik=res.loglik, converged=bool(res.converged), n_eval=int(res.n_eval))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="10,100,500,2000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    ap.add_argument("--r-timeout", type=float, default=0.0)
    ap.add_argument("--r-engines", default="lme4,glmmTMB")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.repeats)))
        return
    levels = [int(v) for v in args.levels.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in levels:
            out = subprocess.run([sys.executable, __file__, "--child", str(k), "--repeats", str(args.repeats)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if args.r_timeout > 0:
                csv = Path(tmp) / f"wide_{k}.csv"
                make_data(k).to_csv(csv, index=False)
                for engine in args.r_engines.split(","):
                    row[engine] = r_fit(engine, csv, Path(tmp) / f"{engine}_{k}.json", args.r_timeout)
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    table = ["| levels of f | p | jaxmm cold (s) | jaxmm warm, median (s) | evaluations | jaxmm log-likelihood "
             "| glmer (s) | glmer log-likelihood | glmmTMB (s) | glmmTMB log-likelihood |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = []
        for engine in ("lme4", "glmmTMB"):
            e = r.get(engine)
            if e is None:
                cells += ["", ""]
            elif "timeout_s" in e:
                cells += [f"> {e['timeout_s']:.0f}", "(stopped)"]
            else:
                cells += [f"{e['time_s']:.2f}", f"{e['loglik']:.4f}" + ("" if e["converged"] else " (not converged)")]
        table.append(f"| {r['levels']} | {r['p']} | {r['cold_s']:.2f} | {r['warm_s']:.2f} | {r['n_eval']} | "
                     f"{r['loglik']:.4f}" + ("" if r["converged"] else " (not converged)") + " | " + " | ".join(cells)
                     + " |")
    text = "\n".join(table)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
