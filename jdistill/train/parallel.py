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


def place(tree, sharding: NamedSharding):
    """``jax.device_put(tree, sharding)``; with several processes through the host, as arrays made
    on one process's device (a loaded teacher, freshly initialised players) cannot be sent to
    another process's devices directly, and every process holds the same values."""
    if jax.process_count() > 1:
        tree = jax.device_get(tree)
    return jax.device_put(tree, sharding)


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    n = mesh.shape[DATA_AXIS]
    if batch_size % n:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the number of devices ({n})")
