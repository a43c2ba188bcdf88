"""Splitting one fit's groups over several devices with JAX's own sharding.

The design is laid out in group-aligned chunks, a multiple of the device count
(``_layout.plan_layout(min_chunks=...)``), and every row and group array is placed with
a ``NamedSharding`` over a one-axis ``Mesh``: device k holds whole chunks, so whole
groups. Inside the fit each device solves its own groups' modes (``shard_map``) and the
sums over groups are all-reduces; θ and the optimiser are replicated.

The arrays are built with ``jax.make_array_from_callback``, which asks each process only
for the pieces its own devices hold. Under ``jax.distributed.initialize()`` every
process reads the same table and the same code builds one global array, so a fit spans
hosts without any jaxmm-specific communication.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._engine import GROUP_AXIS
from .errors import ArgumentError


def resolve_devices(devices) -> list:
    """``devices=N`` (the first N of ``jax.devices()``) or a list of jax devices."""
    available = jax.devices()
    if isinstance(devices, bool) or not isinstance(devices, (int, np.integer, list, tuple)):
        raise ArgumentError(f"devices must be a number of devices or a list of jax devices, got {devices!r}")
    if isinstance(devices, (int, np.integer)):
        if not 1 <= devices <= len(available):
            raise ArgumentError(f"devices={devices}: there are {len(available)} {jax.default_backend()} device(s) "
                                f"({', '.join(str(d) for d in available[:8])})")
        return list(available[:int(devices)])
    chosen = list(devices)
    if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
        raise ArgumentError("devices must be a non-empty list of jax devices (from jax.devices())")
    if len(set(chosen)) != len(chosen):
        raise ArgumentError("devices lists a device more than once")
    return chosen


def make_mesh(devices: list) -> Mesh:
    return Mesh(np.array(devices), (GROUP_AXIS,))


def place(host_design, mesh: Mesh, split: bool = True):
    """The design's host arrays as global arrays sharded along their leading (row or group)
    axis, or with ``split=False`` replicated on every device of the mesh."""
    sharding = NamedSharding(mesh, PartitionSpec(GROUP_AXIS) if split else PartitionSpec())

    def one(arr):
        arr = np.asarray(arr)
        return jax.make_array_from_callback(arr.shape, sharding, lambda index: arr[index])

    return jax.tree_util.tree_map(one, host_design)


def to_host(x) -> np.ndarray:
    """A fit output as a numpy array, gathering pieces held by other processes."""
    if x.is_fully_addressable or x.is_fully_replicated:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def outputs_to_host(out: dict, keys=None) -> dict:
    """A fit's outputs (arrays, or tuples of them per term) as numpy arrays; ``keys`` selects."""
    keys = out.keys() if keys is None else keys
    return {k: tuple(to_host(x) for x in out[k]) if isinstance(out[k], tuple) else to_host(out[k]) for k in keys}
