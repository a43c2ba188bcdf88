"""Models with several random-effect terms: jaxmm against lme4 and glmmTMB, in one run.

    python benchmarks/several_terms.py [--problems verbagg,insteval,sim100k] [--engines jaxmm,lme4,glmmTMB]
                                       [--warm 3] [--timeout 900] [--out benchmarks/results/several_terms.md]

Problems: lme4's VerbAgg crossed GLMM ``r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)``
(7,584 rows, 316 × 24), lme4's InstEval LMM ``y ~ service + (1 | s) + (1 | d)`` (73,421 ratings,
2,972 students × 1,128 lecturers, REML; exported from R's lme4), and a simulated Bernoulli
``y ~ x + (x | user) + (1 | item)`` of 100,000 rows (5,000 users × 1,000 items, seed 1);
``--problems sim1m`` adds one of 1M rows (50,000 users × 1,000 items), ``sim10m`` one of 10M rows
(500,000 users × 2,000 items; ``--warm 0`` times the cold fit alone), ``nested1m`` a gaussian
``y ~ x + (1 | district/school/class)`` of 1M rows (5,000 districts × 10 schools × 4 classes, REML).
jaxmm: *cold* is the first fit in a fresh process (tracing and compilation included, imports
and reading the CSV excluded), *warm* the median of ``--warm`` more fits in that process.
R's engines are timed inside R (``system.time`` around the fit, reading excluded), one run
each, killed after ``--timeout`` seconds. The log-likelihoods are printed beside the times,
so that no speed is bought with a worse fit.
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

import numpy as np
import pandas as pd
from provenance import commit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

PROBLEMS = {
    "verbagg": dict(formula="r2n ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", family="binomial",
                    r="r2n ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", factors=("id", "item")),
    "insteval": dict(formula="y ~ C(service) + (1 | s) + (1 | d)", family="gaussian",
                     r="y ~ service + (1 | s) + (1 | d)", factors=("s", "d", "service")),
    "sim100k": dict(formula="y ~ x + (x | user) + (1 | item)", family="binomial",
                    r="y ~ x + (x | user) + (1 | item)", factors=("user", "item")),
    # not in the default run: 1M rows, 50,000 users × 1,000 items (jaxmm only, in practice)
    "sim1m": dict(formula="y ~ x + (x | user) + (1 | item)", family="binomial",
                  r="y ~ x + (x | user) + (1 | item)", factors=("user", "item")),
    "sim10m": dict(formula="y ~ x + (x | user) + (1 | item)", family="binomial",
                   r="y ~ x + (x | user) + (1 | item)", factors=("user", "item")),
    "nested1m": dict(formula="y ~ x + (1 | district/school/klass)", family="gaussian",
                     r="y ~ x + (1 | district/school/klass)", factors=("district", "school", "klass")),
}
SIMULATED = {"sim100k": (100_000, 5_000, 1_000), "sim1m": (1_000_000, 50_000, 1_000),
             "sim10m": (10_000_000, 500_000, 2_000)}


def _data(name: str, folder: Path) -> Path:
    path = folder / f"{name}.csv"
    if path.exists():
        return path
    if name == "verbagg":
        pd.read_csv(ROOT / "tests" / "data" / "crossed" / "verbagg_crossed_binomial.csv").to_csv(path, index=False)
    elif name == "insteval":
        subprocess.run(["Rscript", "-e", f"suppressMessages(library(lme4)); data(InstEval); "
                        f"write.csv(InstEval[, c('y', 's', 'd', 'service')], '{path}', row.names = FALSE)"],
                       check=True)
    elif name == "nested1m":
        rng = np.random.default_rng(1)
        n, districts = 1_000_000, 5_000
        klass = rng.integers(0, districts * 40, n)  # the class's number among all 200,000
        school, district, x = klass // 4, klass // 40, rng.normal(size=n)
        y = (1 + 0.5 * x + rng.normal(0, 0.5, districts)[district] + rng.normal(0, 0.4, districts * 10)[school]
             + rng.normal(0, 0.3, districts * 40)[klass] + rng.normal(size=n))
        pd.DataFrame({"y": y, "x": x, "district": district, "school": school % 10, "klass": klass % 4}).to_csv(
            path, index=False)
    else:
        rng = np.random.default_rng(1)
        n, users, items = SIMULATED[name]
        u, i, x = rng.integers(0, users, n), rng.integers(0, items, n), rng.normal(size=n)
        eta = (-0.3 + 0.6 * x + rng.normal(0, 0.8, users)[u] + rng.normal(0, 0.4, users)[u] * x
               + rng.normal(0, 0.5, items)[i])
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
        pd.DataFrame({"y": y, "x": x, "user": u, "item": i}).to_csv(path, index=False)
    return path


def child(name: str, path: str, warm: int) -> None:
    """One fresh process: the cold fit, then ``warm`` more."""
    sys.path.insert(0, str(ROOT))
    import jaxmm

    spec = PROBLEMS[name]
    data = pd.read_csv(path)
    for col in spec["factors"]:
        data[col] = data[col].astype(str)
    times = []
    for _ in range(1 + warm):
        start = time.perf_counter()
        res = jaxmm.fit(spec["formula"], data, family=spec["family"])
        times.append(time.perf_counter() - start)
    print(json.dumps({"cold": times[0], "warm": statistics.median(times[1:]) if warm else None, "loglik": res.loglik,
                      "converged": bool(res.converged)}))


def _r(name: str, engine: str, path: Path, timeout: float) -> dict:
    spec = PROBLEMS[name]
    fac = "; ".join(f"d${c} <- factor(d${c})" for c in spec["factors"])
    if engine == "lme4":
        call = (f"lmer({spec['r']}, d, REML = TRUE)" if spec["family"] == "gaussian"
                else f"glmer({spec['r']}, d, family = binomial)")
        lib = "lme4"
    else:
        call = f"glmmTMB({spec['r']}, d, family = {spec['family']}" + (", REML = TRUE)" if spec["family"] == "gaussian"
                                                                        else ")")
        lib = "glmmTMB"
    code = (f"suppressMessages(library({lib})); d <- read.csv('{path}'); {fac}; "
            f"t <- system.time(m <- {call})[['elapsed']]; cat(sprintf('%.6f %.8f\\n', t, as.numeric(logLik(m))))")
    try:
        out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"cold": None, "loglik": None, "note": f"killed after {timeout:.0f} s"}
    if out.returncode:
        return {"cold": None, "loglik": None, "note": out.stderr.strip().splitlines()[-1][:80]}
    t, ll = out.stdout.strip().split()[-2:]
    return {"cold": float(t), "loglik": float(ll), "note": ""}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="verbagg,insteval,sim100k")
    ap.add_argument("--engines", default="jaxmm,lme4,glmmTMB")
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--out", default=str(HERE / "results" / "several_terms.md"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], args.child[1], args.warm)
    folder = Path(tempfile.gettempdir()) / "jaxmm_several_terms"
    folder.mkdir(exist_ok=True)
    rows = []
    for name in args.problems.split(","):
        path = _data(name, folder)
        n = len(pd.read_csv(path))
        results = {}
        for engine in args.engines.split(","):
            if engine == "jaxmm":
                out = subprocess.run([sys.executable, __file__, "--child", name, str(path), "--warm", str(args.warm)],
                                     capture_output=True, text=True, timeout=args.timeout)
                results[engine] = {**json.loads(out.stdout.strip().splitlines()[-1]), "note": ""}
            else:
                results[engine] = _r(name, engine, path, args.timeout)
            print(name, engine, results[engine], flush=True)
        base = results.get("jaxmm", {}).get("cold")
        for engine, r in results.items():
            ratio = f"{r['cold'] / base:.1f}×" if base and r.get("cold") and engine != "jaxmm" else ""
            cold = f"{r['cold']:.2f}" if r.get("cold") else "—"
            warm = f"{r['warm']:.3f}" if r.get("warm") else "—"
            ll = f"{r['loglik']:.4f}" if r.get("loglik") is not None else "—"
            rows.append(f"| {name} | {n:,} | {engine} | {cold} | {warm} | {ll} | {ratio} | {r.get('note', '')} |")
    r_version = subprocess.run(["Rscript", "-e", "cat(R.version.string, as.character(packageVersion('lme4')), "
                                "as.character(packageVersion('glmmTMB')))"], capture_output=True, text=True).stdout
    head = ["# Several random-effect terms: jaxmm, lme4 and glmmTMB", "",
            f"`python benchmarks/several_terms.py --problems {args.problems} --engines {args.engines} "
            f"--warm {args.warm}` at {commit()}, {machine()}; {r_version} "
            "(lme4, glmmTMB). Seconds of one fit; jaxmm *cold* is a fresh process's first fit, compile "
            "included; R's engines have no compile step. *engine / jaxmm cold*: how many times longer "
            "the engine took than jaxmm's cold fit.", "",
            "| problem | rows | engine | cold s | warm s | loglik | engine / jaxmm cold | note |",
            "|---|---:|---|---:|---:|---:|---:|---|"]
    Path(args.out).write_text("\n".join(head + rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
