"""Progress of a fit: lines on stderr (``fit(..., verbose=True)`` and the CLI) or a caller's
function (``verbose=callable``).

The optimiser calls :func:`report` from inside the compiled loop (a JAX debug callback) after
every accepted iteration. A compiled program cannot carry a Python object that changes from
call to call, so the receiver of the running fit is held here between :func:`start` and
:func:`stop`. Lines appear only once a fit has run for ``DELAY`` seconds, so quick fits stay
silent; a function gets every iteration. A JAX host callback lands on a CPU device, so
progress needs JAX's CPU platform: with ``JAX_PLATFORMS=cuda`` alone there is none
(:func:`available`).
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time

DELAY = 2.0
# a compile the fit waits for longer than this gets one line, so that a first fit of a model
# shape does not sit silent for seconds before its first iteration
COMPILE_DELAY = 1.0
_state = {"start": None, "shown": False, "sink": None}


def available() -> bool:
    """Whether a host callback can run: JAX has a CPU device to receive its arguments."""
    import jax

    try:
        return bool(jax.devices("cpu"))
    except RuntimeError:  # the cpu platform is not among JAX_PLATFORMS
        return False


def start(sink=None) -> None:
    """Report the next fit's iterations: as lines on stderr, or to ``sink(iteration,
    objective, max_abs_grad, elapsed)``."""
    _state["start"], _state["shown"], _state["sink"] = time.perf_counter(), False, sink


def report(iteration, objective, max_grad) -> None:
    if _state["start"] is None:
        return
    elapsed = time.perf_counter() - _state["start"]
    if _state["sink"] is not None:
        _state["sink"](int(iteration), float(objective), float(max_grad), elapsed)
        return
    if elapsed < DELAY:
        return
    if not _state["shown"]:
        print("jaxmm: iteration  -loglik  max|grad|  elapsed", file=sys.stderr)
        _state["shown"] = True
    print(f"jaxmm: {int(iteration):4d}  {float(objective):.6f}  {float(max_grad):.2e}  {elapsed:.1f}s",
          file=sys.stderr, flush=True)


@contextlib.contextmanager
def compiling():
    """Around a wait for a program being compiled: one line on stderr if the wait passes
    :data:`COMPILE_DELAY` seconds (line reports only; a function gets iterations only)."""
    if _state["start"] is None or _state["sink"] is not None:
        yield
        return
    timer = threading.Timer(COMPILE_DELAY, lambda: print(
        "jaxmm: compiling the fit's program (once per model shape; the compilation cache keeps it for later "
        "processes) ...", file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def stop() -> None:
    _state["start"], _state["sink"] = None, None
