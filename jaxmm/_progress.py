"""Progress lines for long fits (``fit(..., verbose=True)`` and the CLI), on stderr.

The optimiser calls :func:`report` from inside the compiled loop (a JAX debug callback) after
every accepted iteration; lines appear only once a fit has run for ``DELAY`` seconds, so
quick fits stay silent.
"""
from __future__ import annotations

import sys
import time

DELAY = 2.0
_state = {"start": None, "shown": False}


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
