"""numpy's huge-page hint switched off while jaxmm builds its host arrays.

numpy asks the kernel for transparent huge pages (``madvise(MADV_HUGEPAGE)``) for every
array of 4 MB or more. Where the kernel then compacts memory when such an array is first
touched (THP ``defrag`` = ``madvise``, the Debian and Ubuntu default), a first touch can
stall, and design building is mostly first touches of fresh row-sized arrays: in some
processes every numpy step of a design ran several times slower (docs/performance.md).
The hint is restored on exit, so the caller's own arrays keep numpy's default.
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
