"""Data parallelism with ``jax.sharding``: a one-axis mesh, batches split along it, state
replicated. jit inserts the cross-device reductions."""

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with one ``data`` axis over ``devices`` (default: all visible devices)."""
    return Mesh(np.array(devices if devices is not None else jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fully_sharded(tree, mesh: Mesh, *, min_size: int = 1024):
    """Shardings that split each array of ``tree`` over every device of ``mesh`` along its largest
    axis that the device count divides (fully sharded data parallelism: ZeRO-3, Rajbhandari et al.
    2020; FSDP, Zhao et al. 2023), so that each device holds 1/N of it; jit gathers an array where
    it is used. Arrays under ``min_size`` elements, or with no such axis, are replicated."""
    n = mesh.size

    def sharding(leaf) -> NamedSharding:
        shape = np.shape(leaf)
        axes = [a for a in np.argsort(shape)[::-1] if shape[a] % n == 0]
        if n == 1 or np.prod(shape, dtype=np.int64) < min_size or not axes:
            return replicated(mesh)
        spec = [None] * len(shape)
        spec[axes[0]] = tuple(mesh.axis_names)
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(sharding, tree)


def place(tree, sharding):
    """``jax.device_put(tree, sharding)`` (one sharding, or a tree of them like ``tree``); with
    several processes through the host, as arrays made on one process's device (freshly
    initialised players) cannot be sent to another process's devices directly, and every process
    holds the same values."""
    if jax.process_count() > 1:
        tree = jax.device_get(tree)
    return jax.device_put(tree, sharding)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the number of devices ({n})")


def from_processes(tree, mesh: Mesh, *, axis: int = 0):
    """Global arrays, split over the mesh's devices along ``axis``, from each process's part of
    them (``tree``: this process's rows along ``axis``, in process order;
    ``jax.make_array_from_process_local_data``): the batches each process reads itself."""
    spec = P(*([None] * axis), DATA_AXIS)
    sharding = NamedSharding(mesh, spec)

    def make(local):
        local = np.asarray(local)
        shape = list(local.shape)
        shape[axis] *= jax.process_count()
        return jax.make_array_from_process_local_data(sharding, local, tuple(shape))

    return jax.tree.map(make, tree)
