"""Where a cold fit's compilation goes: tracing, lowering to StableHLO and XLA's compile of
the fit's program, from JAX's compile log, and the whole cold fit, in this process.

It calls only ``jaxmm.fit``, so it also measures an older checkout put first on PYTHONPATH
(``git worktree add /tmp/old REV``; ``PYTHONPATH=/tmp/old python benchmarks/compile_time.py``),
which is how a growth of the compile time is bisected. One cold fit a process: run it
several times for a median.

    python benchmarks/compile_time.py --problems binomial-q2-13k-balanced,binomial-q2-100k-balanced

``--fused`` compiles with XLA:CPU's fused emitters whatever the size (GPUs have no elemental
ones), the closest this CPU comes to a GPU's program.

``--phases`` also splits XLA's compile of the fit's program into its compiler's own timers
(the HLO passes, code generation, and on a GPU the PTX and cubin steps) and its costliest
HLO passes, from XLA's verbose log (``TF_CPP_VMODULE``), which goes to the process's stderr.
"""
from __future__ import annotations

import argparse
import collections
import logging
import os
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
    ap.add_argument("--phases", action="store_true", help="XLA's own timers for the fit's program (verbose log)")
    ap.add_argument("--fused", action="store_true",
                    help="XLA:CPU's fused emitters for every fit, as on a GPU (small CPU fits use the elemental ones)")
    args = ap.parse_args(argv)
    if args.phases:
        # read when jaxlib loads: before the import below. Modules this XLA does not have are ignored.
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        os.environ["TF_CPP_VMODULE"] = ",".join(f"{m}=1" for m in VERBOSE_MODULES)

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

    if args.fused:
        import jaxmm._engine

        jaxmm._engine.ELEMENTAL_MAX_ROWS = 0  # read at each call: no fit is small enough
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
        with _stderr_to_file(args.phases) as log_path:
            t = time.perf_counter()
            jaxmm.fit(formula, df, **kw)
            cold = time.perf_counter() - t
        steps = " ".join(f"{name} {seconds.get(name, float('nan')):.2f}" for name, _ in STEPS)
        print(f"{pid}: {steps} · cold fit {cold:.2f} s", flush=True)
        if log_path:
            print(compiler_phases(Path(log_path).read_text(errors="replace")), flush=True)
            os.unlink(log_path)


# XLA sources whose scoped timers (VLOG 1) time a compilation's phases and passes.
VERBOSE_MODULES = ("hlo_pass_pipeline", "cpu_compiler", "gpu_compiler", "nvptx_compiler", "compile_module_to_llvm_ir",
                   "gpu_executable", "ptx_compiler_impl", "subprocess_compilation", "assemble_compilation_provider")
# glog's prefix: severity+date, time, thread id, source:line]
_LINE = re.compile(r"^[IWE]\d{4} [\d:.]+\s+(\d+) ([\w.]+):\d+\] (.*)$")
_TIMER = re.compile(r"^(.*) time: [^(]*\((\d+) us\)")


class _stderr_to_file:
    """fd 2 (where XLA's C++ log goes) into a temporary file while the block runs."""

    def __init__(self, active: bool):
        self.active = active

    def __enter__(self):
        if not self.active:
            return None
        import tempfile
        sys.stderr.flush()
        fd, self.path = tempfile.mkstemp(prefix="jaxmm-xla-", suffix=".log")
        self.saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
        return self.path

    def __exit__(self, *exc):
        if self.active:
            sys.stderr.flush()
            os.dup2(self.saved, 2)
            os.close(self.saved)
        return False


def compiler_phases(log: str, top: int = 8) -> str:
    """The fit program's compiler timers and its costliest HLO passes, from XLA's verbose
    log. Pass lines do not name their module: each is given to the module of the last
    pipeline started on its thread. A pass that is a pipeline of its own includes its passes."""
    module_of_thread: dict[str, str] = {}
    passes: collections.Counter = collections.Counter()
    timers: list[tuple[str, float]] = []
    unnamed: list[tuple[str, float]] = []
    for line in log.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        thread, source, text = m.groups()
        started = re.match(r"Running HLO pass pipeline on module (\S+):", text)
        if started:
            module_of_thread[thread] = started.group(1)
            continue
        timer = _TIMER.match(text)
        if not timer:
            continue
        label, micros = timer.group(1), int(timer.group(2))
        if source.startswith("hlo_pass_pipeline"):
            if "_fit_" in module_of_thread.get(thread, ""):
                passes[label.removeprefix("HLO pass: ")] += micros / 1e6
        elif "verifier" in label:
            continue
        elif "_fit_" in label:
            timers.append((label, micros / 1e6))
        elif "jit_" not in label and micros >= 50_000:
            # some steps (e.g. PTX to cubin) do not name their program; only the long ones are shown
            unnamed.append((label, micros / 1e6))
    out = ["  compiler timers of the fit's program:"]
    out += [f"    {s:7.3f} s  {label}" for label, s in timers] or ["    (none logged)"]
    if unnamed:
        out.append("  other timers of 50 ms or more that name no program:")
        out += [f"    {s:7.3f} s  {label}" for label, s in unnamed]
    out.append("  costliest HLO passes of the fit's program (a pipeline's time includes its passes'):")
    out += [f"    {s:7.3f} s  {name}" for name, s in passes.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    main()
