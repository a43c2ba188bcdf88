"""A 100M-row Bernoulli fit from a partitioned Parquet dataset on one machine: time, peak
memory, and the log-likelihood against float64.

    python benchmarks/dataset_100m.py [--rows 100000000] [--groups 10000000] [--parts 16]
                                      [--dtype float32] [--folder DIR] [--out FILE]

1. *write*: ``y ~ x + (x | g)`` simulated block by block (1M groups at a time, 10 rows each,
   the truth of benchmarks/problems.py's binomial q = 2 problems), written as Parquet files,
   then laid out by ``jaxmm.partition_dataset`` into ``--parts`` hash parts of ``g``.
2. *fit*: a fresh process fits the dataset (``dtype``); seconds from the call to the result,
   compile included (a cold start: the compilation cache is off), and the process's peak RSS.
3. *check*: the float64 log-likelihood at the fit's estimates, summed part by part (the
   Laplace likelihood is a sum over groups, and every group lies in one part), with its
   float64 gradient and (by central differences of the gradient) Hessian in (β, the lower
   entries of L); the float64 optimum's log-likelihood is then ℓ + ½ gᵀ(−H)⁻¹g to second order.
   A float64 fit of all the rows at once would hold about 21 GB (2.1 GB peak at 10M rows,
   results/dataset_memory.md), which a 24 GB host cannot spare; the parts each hold 1/16.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from provenance import commit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FORMULA = "y ~ x + (x | g)"
BETA = (1.5, -0.3)                      # problems.TRUTH["binomial"], q = 2
SD, CORR = (0.5, 0.18), -0.83
GROUPS_PER_BLOCK = 1_000_000


def write(rows: int, groups: int, parts: int, folder: Path) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    import jaxmm

    start = time.perf_counter()
    per = rows // groups
    raw = folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(20261206)
    cov = np.array([[SD[0] ** 2, CORR * SD[0] * SD[1]], [CORR * SD[0] * SD[1], SD[1] ** 2]])
    chol = np.linalg.cholesky(cov)
    for k, first in enumerate(range(0, groups, GROUPS_PER_BLOCK)):
        m = min(GROUPS_PER_BLOCK, groups - first)
        g = np.repeat(np.arange(first, first + m, dtype=np.int64), per)
        x = np.round(rng.standard_normal(g.size), 6)
        b = rng.standard_normal((m, 2)) @ chol.T
        local = g - first
        eta = BETA[0] + BETA[1] * x + b[local, 0] + b[local, 1] * x
        y = (rng.random(g.size) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int8)
        pq.write_table(pa.table({"g": g, "x": x, "y": y}), raw / f"block{k:03d}.parquet")
    written = time.perf_counter() - start
    jaxmm.partition_dataset(raw, "g", parts, folder / "parts")
    for f in raw.iterdir():
        f.unlink()
    raw.rmdir()
    size = sum(f.stat().st_size for f in (folder / "parts").rglob("*.parquet"))
    return {"simulate_s": written, "total_s": time.perf_counter() - start, "bytes": size}


def fit(folder: Path, dtype: str) -> dict:
    import resource

    import numpy as np

    import jaxmm

    jaxmm.disable_compilation_cache()
    start = time.perf_counter()
    res = jaxmm.fit(FORMULA, folder / "parts", "binomial", dtype=dtype)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loglik": res.loglik, "beta": np.asarray(res.beta).tolist(), "chol": np.asarray(res.params.chol).tolist(),
            "n_eval": res.n_eval, "n_obs": res.n_obs, "n_groups": res.n_groups, "converged": res.converged,
            "max_abs_grad": res.max_abs_grad}


def check(folder: Path, fitted: dict) -> dict:
    """The float64 log-likelihood, gradient and Hessian at the fitted parameters, part by part."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import pyarrow.parquet as pq

    import jaxmm

    start = time.perf_counter()
    lower = np.tril_indices(2)

    def loglik(theta, design):
        chol = jnp.zeros((2, 2), theta.dtype).at[lower].set(theta[2:])
        return jaxmm.marginal_loglik(jaxmm.Params(theta[:2], chol, jnp.ones(())), design, family="binomial")

    value_and_grad = jax.jit(jax.value_and_grad(loglik))
    theta = np.concatenate([fitted["beta"], np.asarray(fitted["chol"])[lower]])
    steps = 1e-4 * np.maximum(np.abs(theta), 0.1)
    total, grad, hess = 0.0, np.zeros(theta.size), np.zeros((theta.size, theta.size))
    for part in sorted((folder / "parts").glob("jaxmm_part=*")):
        table = pq.read_table(part, columns=["g", "x", "y"])
        x, g = table.column("x").to_numpy(), table.column("g").to_numpy()
        X = np.column_stack([np.ones_like(x), x])
        design = jaxmm.design(X, X, table.column("y").to_numpy().astype(np.float64), g)
        del table, X, x, g
        value, gradient = value_and_grad(jnp.asarray(theta), design)
        total += float(value)
        grad += np.asarray(gradient)
        for j in range(theta.size):
            up, down = theta.copy(), theta.copy()
            up[j] += steps[j]
            down[j] -= steps[j]
            hess[:, j] += (np.asarray(value_and_grad(jnp.asarray(up), design)[1])
                           - np.asarray(value_and_grad(jnp.asarray(down), design)[1])) / (2 * steps[j])
        del design
    hess = (hess + hess.T) / 2
    gain = 0.5 * grad @ np.linalg.solve(-hess, grad)
    return {"loglik64": total, "grad": grad.tolist(), "gain": float(gain), "optimum64": total + float(gain),
            "seconds": time.perf_counter() - start}


def _memory_gb() -> float:
    """The host's physical memory."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30


def child(step: str, args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--step", step, *sys.argv[1:]], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"step {step} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--groups", type=int, default=10_000_000)
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--folder", help="where the dataset is (written there when absent)")
    ap.add_argument("--out", default=str(HERE / "results" / "dataset_100m.md"))
    ap.add_argument("--step", choices=("write", "fit", "check"), help=argparse.SUPPRESS)
    ap.add_argument("--fitted", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = Path(args.folder or f"/tmp/jaxmm_{args.rows}_{args.groups}_{args.parts}")
    if args.step:
        sys.path.insert(0, str(ROOT))
        result = {"write": lambda: write(args.rows, args.groups, args.parts, folder),
                  "fit": lambda: fit(folder, args.dtype),
                  "check": lambda: check(folder, json.loads(Path(args.fitted).read_text()))}[args.step]()
        print(json.dumps(result))
        return
    written = None
    if not (folder / "parts").exists():
        written = child("write", args)
        print("write", written, flush=True)
    fitted = child("fit", args)
    print("fit", fitted, flush=True)
    record = folder / "fitted.json"
    record.write_text(json.dumps(fitted))
    sys.argv += ["--fitted", str(record)]
    checked = child("check", args)
    print("check", checked, flush=True)
    rel = lambda a, b: abs(a - b) / abs(b)
    lines = ["# 100M rows from a partitioned Parquet dataset on one machine", "",
             f"`python benchmarks/dataset_100m.py --rows {args.rows} --groups {args.groups} --parts {args.parts} "
             f"--dtype {args.dtype}` at {commit()}, {machine()}, {_memory_gb():.0f} GB of memory. Bernoulli `{FORMULA}`, "
             f"{args.rows:,} rows in {args.groups:,} groups, {args.parts} hash parts of `g`.", ""]
    if written:
        lines += [f"Simulating and writing: {written['simulate_s']:.0f} s, partitioning included "
                  f"{written['total_s']:.0f} s; {written['bytes'] / 1e9:.2f} GB of Parquet.", ""]
    lines += ["| | value |", "|---|---:|",
              f"| fit, seconds from the call to the result (cold: no compilation cache) | {fitted['seconds']:.0f} |",
              f"| peak RSS of the fitting process | {fitted['peak_mb'] / 1024:.2f} GB |",
              f"| bytes of peak RSS per row | {fitted['peak_mb'] * 2 ** 20 / args.rows:.0f} |",
              f"| likelihood evaluations | {fitted['n_eval']} |",
              f"| converged / max abs gradient | {fitted['converged']} / {fitted['max_abs_grad']:.2g} |",
              f"| loglik ({args.dtype} fit) | {fitted['loglik']:.4f} |",
              f"| float64 loglik at the fit's estimates (by parts) | {checked['loglik64']:.4f} |",
              f"| float64 gradient there, max abs | {max(abs(v) for v in checked['grad']):.3g} |",
              f"| float64 optimum to second order, ℓ + ½gᵀ(−H)⁻¹g | {checked['optimum64']:.4f} |",
              f"| relative difference, {args.dtype} fit against the float64 optimum | "
              f"{rel(fitted['loglik'], checked['optimum64']):.2g} |", "",
              f"Estimates: β = {[round(b, 5) for b in fitted['beta']]}, L = "
              f"{[[round(v, 5) for v in r] for r in fitted['chol']]} (truth: β = {list(BETA)}, sd {list(SD)}, "
              f"corr {CORR}). The float64 check took {checked['seconds']:.0f} s."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
