"""Where one fit's time goes: design building, the compiled fit, the result, on this backend.

``jaxmm.fit`` runs three stages one after another: the design (formula, group codes, sort,
tiles; numpy on the host), the compiled fit (the device), and the result (labelled pandas
objects, the host). This script wraps each stage with a timer, fits one problem cold
(tracing and compilation included, caches cleared) and then warm, and prints a Markdown table.
A cold fit compiles its program on a background thread while the design is laid out, so
its compiled-fit stage holds what remains of that compilation; ``--no-early-compile``
compiles it in the call instead (the comparison). After each problem's table a line gives the
cold fit's timeline: when its compilation starts, when JAX reports the fit's program traced,
lowered and compiled (its compile log, which is on), and when the design, fit and result end.

    python benchmarks/stages.py --problems binomial-q2-1M-balanced,binomial-q2-10M-balanced
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


def _timed(module, name, spent, block=False):
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        if block:
            import jax

            jax.block_until_ready(out)
        spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return out

    setattr(module, name, wrapper)


class _Timeline:
    """Seconds from the start of a fit to each step of its compilation (JAX's compile log,
    from whichever thread compiles) and of the fit itself."""

    STEPS = (("Finished tracing", "traced"), ("Finished jaxpr to MLIR", "lowered"),
             ("Finished XLA compilation", "compiled"))

    def __init__(self):
        import logging

        self.start, self.events = None, []
        timeline = self

        class Handler(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                for prefix, label in timeline.STEPS:
                    # the fit's own program only (_fit_glmm, _fit_lmm, ...), not the small ones
                    if message.startswith(prefix) and "_fit_" in message:
                        timeline.mark(label)

        logger = logging.getLogger("jax")
        logger.addHandler(Handler())
        logger.propagate = False  # the log is read here, not printed

    def mark(self, label):
        if self.start is not None:
            self.events.append((label, time.perf_counter() - self.start))

    def reset(self):
        self.start, self.events = time.perf_counter(), []

    def line(self):
        return " · ".join(f"{label} {t:.2f}" for label, t in sorted(self.events, key=lambda e: e[1]))


def _done():
    """An event already set: what jaxmm's early compilation waits on, when there is none."""
    import threading

    event = threading.Event()
    event.set()
    return event


def _option(text):
    name, _, value = text.partition("=")
    low = value.lower()
    if low in ("true", "false"):
        return name, low == "true"
    try:
        return name, int(value)
    except ValueError:
        return name, value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="binomial-q2-1M-balanced")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--no-early-compile", action="store_true",
                    help="compile the fit's program when it is called, not while the design is laid out "
                         "(the comparison for jaxmm's early compilation)")
    ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                    help="an XLA compile option set in each of jaxmm's option sets (_jit.*COMPILER_OPTIONS), "
                         "e.g. xla_gpu_enable_triton_gemm=true; repeatable")
    args = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    import formulaic  # noqa: F401 - imported before the timed fits, as in the benchmark's children
    import jaxmm
    from jaxmm import _fit

    if args.option:
        from jaxmm import _jit

        added = dict(_option(o) for o in args.option)
        for options in (_jit.COMPILER_OPTIONS, _jit.ELEMENTAL_COMPILER_OPTIONS, _jit.GPU_COMPILER_OPTIONS):
            options.update(added)
        refused = set(added) - set(_jit.accepted_options(jax.default_backend(), added))
        print(f"options added {added}" + (f"; refused by this backend: {sorted(refused)}" if refused else ""))
    timeline = _Timeline()
    jax.config.update("jax_log_compiles", True)
    prefetch = _fit.prefetch_one

    def early(*a, **k):
        timeline.mark("compile starts")
        if not args.no_early_compile:
            return prefetch(*a, **k)
        return _done()

    _fit.prefetch_one = early
    spent: dict[str, float] = {}
    _timed(_fit, "design_from_formula", spent)
    _timed(_fit, "fit_one", spent, block=True)
    _timed(_fit, "_result", spent)
    for name, label in (("design_from_formula", "design done"), ("fit_one", "fit done"), ("_result", "result done")):
        inner = getattr(_fit, name)
        setattr(_fit, name, lambda *a, _inner=inner, _label=label, **k: (_inner(*a, **k), timeline.mark(_label))[0])

    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}); jax {jax.__version__}; "
          f"dtype {args.dtype}; early compilation {'off' if args.no_early_compile else 'on'}\n")
    print("| problem | run | total s | design s | compiled fit s | result s | other s | iterations | loglik |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for pid in args.problems.split(","):
        prob = P.get(pid)
        df, formula, kw = P.generate(prob)
        jax.clear_caches()
        rows, cold_line = [], ""
        for run in ["cold"] + [f"warm {i + 1}" for i in range(args.repeats)]:
            spent.clear()
            timeline.reset()
            t = time.perf_counter()
            res = jaxmm.fit(formula, df, **kw, dtype=args.dtype)
            total = time.perf_counter() - t
            fit_s = spent.get("fit_one", 0.0)
            design_s, result_s = spent.get("design_from_formula", 0.0), spent.get("_result", 0.0)
            rows.append((run, total, design_s, fit_s, result_s, total - design_s - fit_s - result_s))
            print(f"| {pid} | {run} | {total:.3f} | {design_s:.3f} | {fit_s:.3f} | {result_s:.3f} | "
                  f"{rows[-1][-1]:.3f} | {res.n_iter} | {res.loglik:.4f} |", flush=True)
            del res
            if run == "cold":
                cold_line = timeline.line()
        if args.repeats:
            med = [statistics.median(r[i] for r in rows[1:]) for i in range(1, 6)]
            print(f"| {pid} | warm median | " + " | ".join(f"{v:.3f}" for v in med) + " | | |", flush=True)
        print(f"\n{pid}, cold, seconds from the call: {cold_line}\n", flush=True)


if __name__ == "__main__":
    main()
