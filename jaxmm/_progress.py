"""Progress lines for long fits (``fit(..., verbose=True)`` and the CLI), on stderr.

The optimiser calls :func:`report` from inside the compiled loop (a JAX debug callback) after
every accepted iteration; lines appear only once a fit has run for ``DELAY`` seconds, so
quick fits stay silent. A JAX host callback lands on a CPU device, so the lines need JAX's
CPU platform: with ``JAX_PLATFORMS=cuda`` alone there is none (:func:`available`).
"""
from __future__ import annotations

import sys
import time

DELAY = 2.0
_state = {"start": None, "shown": False}


def available() -> bool:
    """Whether a host callback can run: JAX has a CPU device to receive its arguments."""
    import jax

    try:
        return bool(jax.devices("cpu"))
    except RuntimeError:  # the cpu platform is not among JAX_PLATFORMS
        return False


def start() -> None:
    _state["start"], _state["shown"] = time.perf_counter(), False


def report(iteration, objective, max_grad) -> None:
    if _state["start"] is None:
        return
    elapsed = time.perf_counter() - _state["start"]
    if elapsed < DELAY:
        return
    if not _state["shown"]:
        print("jaxmm: iteration  -loglik  max|grad|  elapsed", file=sys.stderr)
        _state["shown"] = True
    print(f"jaxmm: {int(iteration):4d}  {float(objective):.6f}  {float(max_grad):.2e}  {elapsed:.1f}s",
          file=sys.stderr, flush=True)


def stop() -> None:
    _state["start"] = None
