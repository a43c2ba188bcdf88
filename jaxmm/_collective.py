"""Host values exchanged between the processes of a ``jax.distributed`` job.

A fit whose processes each read their own groups (``_process_rows``) agrees on a few host
values before its first step: the design's column names, the Gram matrix of the fixed
effects, the layout's sizes, the group labels, and whether every process could build its
rows at all. These helpers carry them over JAX's own collectives
(``multihost_utils.process_allgather``), so the job needs no second channel; each is
called by every process, in the same order.
"""
from __future__ import annotations

import json

import numpy as np


def _allgather(values: np.ndarray) -> np.ndarray:
    """(processes, ...) of every process's array of one shape and dtype."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values), tiled=False))


def total(values) -> np.ndarray:
    """The sum over processes of a float or integer array."""
    values = np.asarray(values)
    return _allgather(values).sum(axis=0).astype(values.dtype, copy=False)


def maximum(values) -> np.ndarray:
    """The elementwise maximum over processes."""
    return _allgather(np.asarray(values)).max(axis=0)


def gather_arrays(values: np.ndarray) -> list:
    """Every process's 1-D array (lengths may differ), in process order."""
    values = np.asarray(values)
    lengths = _allgather(np.array([values.size], np.int64))[:, 0]
    padded = np.zeros(int(lengths.max(initial=0)), values.dtype)
    padded[:values.size] = values
    gathered = _allgather(padded)
    return [gathered[k, :n] for k, n in enumerate(lengths)]


def gather_json(value) -> list:
    """Every process's JSON-able value (text labels, error messages), in process order.
    JSON rather than pickle: a peer's bytes are data, never code."""
    raw = np.frombuffer(json.dumps(value).encode(), np.uint8)
    return [json.loads(bytes(b).decode()) for b in gather_arrays(raw)]
