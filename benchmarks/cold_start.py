"""A new user's first fit: ``fit()`` in a fresh process with an empty compilation cache and
with the cache that an earlier process left (jaxmm's default), against lmer/glmer, in one run.

    python benchmarks/cold_start.py [--problems sleepstudy,cbpp,contraception] [--repeats 5]
                                    [--out benchmarks/results/cold_start.md]

Each measurement is a fresh Python process that imports jaxmm and reads the example table
(not timed), then times ``jaxmm.fit`` alone. *empty cache*: the process's cache folder is
new; *warm cache*: a second process on the folder the first one filled. R's engines are
timed inside a fresh Rscript (``system.time`` around the fit). Medians of ``--repeats``.
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
from provenance import commit, machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

R_CALLS = {
    "sleepstudy": "lmer(Reaction ~ Days + (Days | Subject), d)",
    "cbpp": "glmer(cbind(incidence, size - incidence) ~ factor(period) + (1 | herd), d, family = binomial)",
    "contraception": "glmer(use01 ~ age + age2 + urban01 + factor(livch) + (urban01 | district), d, "
                     "family = binomial)",
}

CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import jaxmm
from jaxmm._examples import EXAMPLES
_, formula, kwargs = EXAMPLES[{name!r}]
data = jaxmm.load_example({name!r})
from jax._src import monitoring
phases = {{}}
def record(event, seconds, **_):
    phases[event] = phases.get(event, 0.0) + seconds
monitoring.register_event_duration_secs_listener(record)
imported = "formulaic" in sys.modules
start = time.perf_counter()
res = jaxmm.fit(formula, data, **kwargs)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "loglik": res.loglik, "formulaic_imported_before": imported,
                   "trace_lower": phases.get("/jax/core/compile/jaxpr_trace_duration", 0.0)
                   + phases.get("/jax/core/compile/jaxpr_to_mlir_module_duration", 0.0),
                   "cache_load": phases.get("/jax/compilation_cache/cache_retrieval_time_sec", 0.0)}}))
"""

# formulaic, which the first fit imports (the model matrices), timed in a fresh process
IMPORT_CHILD = """
import sys, time
sys.path.insert(0, {root!r})
import jaxmm
start = time.perf_counter()
import formulaic
print(time.perf_counter() - start)
"""


def _jaxmm(name: str, folder: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "JAXMM_NO_CACHE"}
    env["JAXMM_CACHE_DIR"] = str(folder)
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), name=name)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _r(name: str, path: Path) -> float | None:
    code = (f"suppressMessages(library(lme4)); d <- read.csv('{path}'); "
            f"t <- system.time(m <- {R_CALLS[name]})[['elapsed']]; cat(sprintf('%.6f\\n', t))")
    out = subprocess.run(["Rscript", "-e", code], capture_output=True, text=True)
    return float(out.stdout.strip().split()[-1]) if out.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="sleepstudy,cbpp,contraception")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "cold_start.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import jaxmm

    rows = []
    for name in args.problems.split(","):
        empty, warm, r_times, parts = [], [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            table = Path(tmp) / f"{name}.csv"
            jaxmm.load_example(name).to_csv(table, index=False)
            for k in range(args.repeats):
                folder = Path(tmp) / f"cache{k}"
                first = _jaxmm(name, folder)
                empty.append(first["seconds"])
                second = _jaxmm(name, folder)
                warm.append(second["seconds"])
                parts.append((second["trace_lower"], second["cache_load"]))
                r_times.append(_r(name, table))
        r_ok = [t for t in r_times if t is not None]
        r_med = statistics.median(r_ok) if r_ok else None
        e, w = statistics.median(empty), statistics.median(warm)
        trace_lower, load = (statistics.median(v) for v in zip(*parts))
        rows.append(f"| {name} | {e:.2f} | {w:.3f} | {trace_lower:.3f} | {load:.3f} | "
                    + (f"{r_med:.3f} | {e / r_med:.0f}× | {w / r_med:.1f}× |" if r_med else "n/a | | |"))
        print(rows[-1], flush=True)
    import jax

    imports = [float(subprocess.run([sys.executable, "-c", IMPORT_CHILD.format(root=str(ROOT))], capture_output=True,
                                    text=True, check=True).stdout.split()[-1]) for _ in range(args.repeats)]
    head = ["# A first fit in a fresh process: empty and warm compilation cache", "",
            f"`python benchmarks/cold_start.py --problems {args.problems} --repeats {args.repeats}` at {commit()}, "
            f"{machine()}, jax {jax.__version__}. Seconds of `fit()` alone in a "
            "fresh process (import and reading excluded), medians; lme4's fit timed inside a fresh Rscript. "
            "Of the warm fit: *trace + lower*, JAX tracing the fit and lowering it to XLA (which the cache key "
            "needs), and *load*, reading the compiled program back from the cache.", "",
            "| problem | empty cache s | warm cache s | warm: trace + lower s | warm: load s | lme4 s | "
            "empty / lme4 | warm / lme4 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    foot = ["", f"The first fit of a process also imports formulaic (the model matrices): "
            f"{statistics.median(imports):.3f} s in a fresh process, median of {args.repeats}."]
    Path(args.out).write_text("\n".join(head + rows + foot) + "\n")


if __name__ == "__main__":
    main()
