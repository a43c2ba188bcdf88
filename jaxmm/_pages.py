"""numpy's huge-page hint switched off while jaxmm builds its host arrays.

numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every
array of 4 MB or more. Where the kernel then compacts memory when such an array is first
touched (THP ``defrag`` = ``madvise``, the Debian and Ubuntu default), a first touch can
stall, and design building is mostly first touches of fresh row-sized arrays. Measured on
a 2-core CPU, the by= design of 1000 replicates x 2000 rows took 0.09-0.14 s in 5 of 8
fresh processes and 0.41-0.44 s in the other 3, every numpy step 4-7x slower; with the
hint off it took 0.15-0.16 s in all 10. The hint is restored on exit, so the caller's
own arrays keep numpy's default.
"""
from __future__ import annotations

import contextlib

import numpy as np


def _setter():
    for module in ("_core", "core"):  # numpy 2 / numpy 1.26
        multiarray = getattr(getattr(np, module, None), "multiarray", None)
        setter = getattr(multiarray, "_set_madvise_hugepage", None)
        if setter is not None:
            return setter
    return None


_SET_HUGEPAGE = _setter()


@contextlib.contextmanager
def small_pages():
    """The hint off inside; also a decorator (``@small_pages()``), as every contextmanager is."""
    if _SET_HUGEPAGE is None:
        yield
        return
    previous = _SET_HUGEPAGE(False)
    try:
        yield
    finally:
        _SET_HUGEPAGE(previous)
