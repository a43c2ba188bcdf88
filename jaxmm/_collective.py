"""Host values exchanged between the processes of a ``jax.distributed`` job.

A fit whose processes each read their own groups (``_process_fit``) agrees on a few host
values before its first step: the design's column names, the Gram matrix of the fixed
effects, the layout's sizes, the group labels, and whether every process could build its
rows at all. These helpers carry them over JAX's own collectives
(``multihost_utils.process_allgather``), so the job needs no second channel; each is
called by every process, in the same order.

A process that fails sends its error in place of the value the others are exchanging, so
whichever exchange they are in, they learn of it and raise too, rather than wait for a
peer that has stopped (:func:`agreed`).
"""
from __future__ import annotations

import json

import numpy as np

from .errors import DataError


class PeerError(DataError):
    """Another process of the job could not build its rows."""


def _allgather(values: np.ndarray) -> np.ndarray:
    """(processes, ...) of every process's array of one shape and dtype."""
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(values), tiled=False))


def gather_arrays(values: np.ndarray) -> list:
    """Every process's 1-D array (lengths may differ), in process order."""
    values = np.asarray(values)
    lengths = _allgather(np.array([values.size], np.int64))[:, 0]
    padded = np.zeros(int(lengths.max(initial=0)), values.dtype)
    padded[:values.size] = values
    gathered = _allgather(padded)
    return [gathered[k, :n] for k, n in enumerate(lengths)]


def _exchange(kind: str, value) -> list:
    """Every process's JSON-able value, in process order; a PeerError where another process
    sent its error instead. JSON rather than pickle: a peer's bytes are data, never code."""
    raw = np.frombuffer(json.dumps([kind, value]).encode(), np.uint8)
    messages = [json.loads(bytes(b).decode()) for b in gather_arrays(raw)]
    if kind != "error":
        for k, (their_kind, theirs) in enumerate(messages):
            if their_kind == "error":
                raise PeerError(f"process {k} of the job could not build its rows: {theirs}")
    return [theirs for _, theirs in messages]


def gather_json(value) -> list:
    """Every process's JSON-able value (text labels, names), in process order."""
    return _exchange("value", value)


def total(values) -> np.ndarray:
    """The sum over processes of a float or integer array (float64 round-trips JSON exactly)."""
    values = np.asarray(values)
    return np.sum([np.asarray(v, values.dtype) for v in _exchange("sum", values.tolist())], axis=0)


def array_total(values: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """The sum over processes of a float array of one shape in every process (a dense block
    of statistics, too large for :func:`total`'s JSON), gathered a chunk at a time so that
    no process holds every process's copy of the whole; summed in process order, so that
    every process gets the same bits."""
    values = np.asarray(values, np.float64)
    flat, out = values.ravel(), np.empty(values.size)
    for at in range(0, flat.size, chunk):
        out[at:at + chunk] = _allgather(flat[at:at + chunk]).sum(axis=0)
    return out.reshape(values.shape)


def maximum(values) -> np.ndarray:
    """The elementwise maximum over processes."""
    return np.max([np.asarray(v) for v in _exchange("max", np.asarray(values).tolist())], axis=0)


def agreed(step):
    """``step()`` in every process, or the first problem any process met raised in all.

    A failing process sends its error as its next exchange and raises; the others meet it in
    whichever exchange they are in (inside ``step`` or after it) and raise a PeerError."""
    try:
        value = step()
    except PeerError:
        raise
    except Exception as exc:
        _exchange("error", str(exc))
        raise
    _exchange("done", None)
    return value
