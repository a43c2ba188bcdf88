"""A simulation study with crossed random effects: ``jaxmm.fit(..., by="rep")`` against a loop
of ``lme4::lmer`` over the same replicates, in one run.

    python benchmarks/several_terms_by.py [--replicates 500] [--repeats 3]
                                          [--out benchmarks/results/several_terms_by.md]

Each replicate: 24 subjects × 12 items, every subject sees every item (288 rows),
y = 1 + 0.5x + s + i + e with SD(s) = 0.8, SD(i) = 0.5, SD(e) = 1, fitted
``y ~ x + (1 | subject) + (1 | item)`` by REML. jaxmm's *cold* is the first call in a fresh
process (compilation included, imports excluded), *warm* the median of ``--repeats`` more
calls in that process; the replicates are fitted one after another through one compiled
program (they share a shape). lme4 is timed inside R (``system.time`` around the loop,
reading excluded). The REML criteria are compared replicate by replicate.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from provenance import commit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
FORMULA = "y ~ x + (1 | subject) + (1 | item)"

R_LOOP = """
suppressMessages(library(lme4))
d <- read.csv("{data}")
reps <- split(d, d$rep)
t <- system.time(ll <- sapply(reps, function(x) as.numeric(logLik(lmer(y ~ x + (1 | subject) + (1 | item), x)))))
cat(sprintf("%.4f\\n", t[["elapsed"]])); write.csv(data.frame(rep = names(ll), loglik = ll), "{out}", row.names = FALSE)
"""

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import pandas as pd, jaxmm
data = pd.read_csv({data!r})
times = []
for _ in range(1 + {repeats}):
    start = time.perf_counter()
    res = jaxmm.fit({formula!r}, data, by="rep")
    times.append(time.perf_counter() - start)
frame = res.to_frame()
print(json.dumps({{"times": times, "loglik": frame["loglik"].tolist(), "keys": [str(k) for k in res.keys],
                  "converged": int(frame["converged"].sum())}}))
"""


def simulate(replicates: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    subject, item = np.repeat(np.arange(24), 12), np.tile(np.arange(12), 24)
    parts = []
    for r in range(replicates):
        x = rng.normal(size=subject.size)
        y = (1 + 0.5 * x + rng.normal(0, 0.8, 24)[subject] + rng.normal(0, 0.5, 12)[item]
             + rng.normal(size=subject.size))
        parts.append(pd.DataFrame({"rep": r, "subject": subject, "item": item, "x": x, "y": y}))
    return pd.concat(parts, ignore_index=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(HERE / "results" / "several_terms_by.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sims.csv"
        simulate(args.replicates).to_csv(data, index=False)
        env = dict(os.environ, JAXMM_NO_CACHE="1")
        code = CHILD.format(root=str(HERE.parent), data=str(data), repeats=args.repeats, formula=FORMULA)
        child = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        jax_out = json.loads(child.stdout.strip().splitlines()[-1])
        r_out = Path(tmp) / "lmer.csv"
        r = subprocess.run(["Rscript", "-e", R_LOOP.format(data=data, out=r_out)], capture_output=True, text=True,
                           check=True)
        r_seconds = float(r.stdout.strip().splitlines()[-1])
        r_ll = pd.read_csv(r_out).set_index("rep")["loglik"]
    ours = pd.Series(jax_out["loglik"], index=[int(k) for k in jax_out["keys"]])
    diff = (ours - r_ll.reindex(ours.index)).to_numpy()
    cold, warm = jax_out["times"][0], statistics.median(jax_out["times"][1:])
    lines = [
        "# A simulation study with crossed random effects: `by=` against an lmer loop", "",
        f"`python benchmarks/several_terms_by.py --replicates {args.replicates} --repeats {args.repeats}` at "
        f"{commit()}, {machine()}. {args.replicates} replicates of 288 rows "
        f"(24 subjects × 12 items), `{FORMULA}`, REML; seconds for all replicates.", "",
        "| engine | cold s | warm s | per replicate (warm) ms | lmer loop / jaxmm |",
        "|---|---:|---:|---:|---:|",
        f"| jaxmm `by=` | {cold:.2f} | {warm:.2f} | {1e3 * warm / args.replicates:.1f} | "
        f"{r_seconds / cold:.1f}× cold, {r_seconds / warm:.1f}× warm |",
        f"| lme4 `lmer` loop | {r_seconds:.2f} | | {1e3 * r_seconds / args.replicates:.1f} | |", "",
        f"Converged: {jax_out['converged']} of {args.replicates}. REML criterion, jaxmm − lme4 per replicate: "
        f"min {diff.min():.2e}, median {np.median(diff):.2e}, max {diff.max():.2e}.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
