"""Keep Python's cyclic garbage collector off the objects that already existed while a fit
is traced and compiled.

Tracing allocates tens of thousands of short-lived objects, and every so often that
triggers a full collection, which walks every object the process holds: pandas, the data,
JAX's own modules; those walks were a large share of a trace (docs/performance.md).
Freezing the existing objects for the duration of the call (``gc.freeze``) removes the
walks while new garbage is still collected, so memory stays bounded; they are unfrozen
afterwards.
"""
from __future__ import annotations

import contextlib
import functools
import gc


@contextlib.contextmanager
def frozen_heap():
    # A process that froze objects itself (e.g. before forking workers) keeps its own
    # arrangement: unfreezing at the end would undo it.
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def with_frozen_heap(fn):
    """``fn`` run inside :func:`frozen_heap`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with frozen_heap():
            return fn(*args, **kwargs)
    return wrapper
