"""One device mesh with a ``"data"`` axis: batches sharded, parameters replicated.

A single GPU is a mesh of size 1 and a Colab TPU a mesh of size 8; the same ``jax.jit``
code runs on all of them (no ``pmap``). Tests fake several CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"

__all__ = ["DATA_AXIS", "batch_sharding", "make_mesh", "replicated", "shard_batch"]


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices, axis ``"data"``.

    Args:
      num_devices: how many devices; ``None``: all.

    Returns:
      The mesh.

    Raises:
      ValueError: ``num_devices`` not in ``1..len(jax.devices())``.
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices} but {len(devices)} device(s) are available")
    return Mesh(np.asarray(devices[:n]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (parameters, optimizer state).

    Args:
      mesh: the mesh.

    Returns:
      The sharding.
    """
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the ``"data"`` axis.

    Args:
      mesh: the mesh.

    Returns:
      The sharding.
    """
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Put a pytree of arrays with a leading batch axis on the mesh, split over ``"data"``.

    Args:
      batch: the pytree; every leaf's batch size must be a multiple of the number of devices.
      mesh: the mesh.

    Returns:
      The pytree of sharded ``jax.Array``.

    Raises:
      ValueError: a leaf that is a scalar or whose batch size does not divide evenly.
    """
    n = mesh.shape[DATA_AXIS]

    def put(x: Any) -> jax.Array:
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(
                f"batch leaf of shape {x.shape} cannot be split over {n} devices: the batch size "
                f"must be a multiple of the number of devices"
            )
        return jax.device_put(x, batch_sharding(mesh))

    return jax.tree.map(put, batch)
