"""Where a cold fit's compilation goes: tracing, lowering to StableHLO and XLA's compile of
the fit's program, from JAX's compile log, and the whole cold fit, in this process.

It calls only ``jaxmm.fit``, so it also measures an older checkout put first on PYTHONPATH
(``git worktree add /tmp/old REV``; ``PYTHONPATH=/tmp/old python benchmarks/compile_time.py``),
which is how a growth of the compile time is bisected. One cold fit a process: run it
several times for a median.

    python benchmarks/compile_time.py --problems binomial-q2-13k-balanced,binomial-q2-100k-balanced
"""
from __future__ import annotations

import argparse
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import problems as P  # noqa: E402

STEPS = (("trace", "Finished tracing"), ("lower", "Finished jaxpr to MLIR"), ("xla", "Finished XLA compilation"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="binomial-q2-13k-balanced")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_log_compiles", True)
    seconds: dict[str, float] = {}

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "_fit_" not in message:  # the fit's own program, not the small ones
                return
            for name, prefix in STEPS:
                if message.startswith(prefix):
                    found = re.search(r"in ([0-9.]+) sec", message)
                    if found:
                        seconds[name] = seconds.get(name, 0.0) + float(found.group(1))

    logger = logging.getLogger("jax")
    logger.addHandler(Handler())
    logger.propagate = False
    import formulaic  # noqa: F401 - imported before the timed fit, as in the benchmark's children
    import jaxmm

    try:
        rev = subprocess.run(["git", "-C", str(Path(jaxmm.__file__).parent), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    print(f"jaxmm from {Path(jaxmm.__file__).parent} ({rev or 'no git'}); backend {jax.default_backend()} "
          f"({jax.devices()[0].device_kind}); jax {jax.__version__}")
    for pid in args.problems.split(","):
        df, formula, kw = P.generate(P.get(pid))
        seconds.clear()
        t = time.perf_counter()
        jaxmm.fit(formula, df, **kw)
        cold = time.perf_counter() - t
        steps = " ".join(f"{name} {seconds.get(name, float('nan')):.2f}" for name, _ in STEPS)
        print(f"{pid}: {steps} · cold fit {cold:.2f} s", flush=True)


if __name__ == "__main__":
    main()
