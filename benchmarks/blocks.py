"""Rows per block (``_types.CHUNK_ROWS`` / ``GPU_CHUNK_ROWS``) against fit time, in one process.

A Laplace fit runs over its rows block by block (``lax.map``), which bounds its temporary
memory. This script measures what the block size costs or buys on the current backend:
for each size it fits one problem cold (tracing and compilation included, caches cleared)
and then warm, and prints a Markdown table with the log-likelihood reached.

    python benchmarks/blocks.py --problem binomial-q2-10M-balanced --rows 19,21,23,24
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems as P  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="binomial-q2-10M-balanced")
    ap.add_argument("--rows", default="19,21,23,24", help="log2 of the rows per block, comma list")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float64")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    import jaxmm
    from jaxmm import _types

    prob = P.get(args.problem)
    t = time.perf_counter()
    df, _, _ = P.generate(prob)
    print(f"{prob.id}: generated in {time.perf_counter() - t:.1f} s; backend {jax.default_backend()} "
          f"({jax.devices()[0].device_kind}); jax {jax.__version__}; dtype {args.dtype}", flush=True)
    print("\n| log2 rows/block | blocks (about) | cold s | warm s (median) | loglik |\n|---:|---:|---:|---:|---:|")
    for k in (int(v) for v in args.rows.split(",")):
        _types.CHUNK_ROWS = _types.GPU_CHUNK_ROWS = 1 << k
        jax.clear_caches()
        t = time.perf_counter()
        res = jaxmm.fit(prob.formula, df, **prob.fit_kwargs, dtype=args.dtype)
        cold = time.perf_counter() - t
        del res
        warm = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = jaxmm.fit(prob.formula, df, **prob.fit_kwargs, dtype=args.dtype)
            warm.append(time.perf_counter() - t)
            loglik = res.loglik
            del res
        print(f"| {k} | {-(-prob.rows // (1 << k))} | {cold:.2f} | {statistics.median(warm):.2f} | {loglik:.4f} |",
              flush=True)


if __name__ == "__main__":
    main()
