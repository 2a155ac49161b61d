"""Feeding batches to the mesh, from one process or several.

``batch_fn(step)`` is a deterministic function of the step (so a resumed run replays the
data). With several processes (:mod:`vae_xai.distributed`) each process feeds only its rows
of every global batch and the global arrays are assembled from them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_xai import distributed
from vae_xai.sharding import DATA_AXIS, shard_batch
from vae_xai.train.state import Batch


def _local_rows(batch_fn: Callable[..., Batch], step: int) -> tuple[Any, int]:
    """This process's rows of global batch ``step`` and the global batch size. A
    ``batch_fn`` with a ``global_batch_size`` attribute is asked for those rows only
    (``batch_fn(step, rows=slice)``); any other is called for the whole batch and sliced."""
    size = getattr(batch_fn, "global_batch_size", None)
    if size is not None:
        return batch_fn(step, rows=distributed.process_rows(int(size))), int(size)
    full = batch_fn(step)
    size = len(np.asarray(jax.tree.leaves(full)[0]))
    rows = distributed.process_rows(size)
    return jax.tree.map(lambda x: np.asarray(x)[rows], full), size


def _device_batch(batch_fn: Callable[..., Batch], step: int, mesh: Mesh) -> Any:
    """``batch_fn(step)`` on the mesh. With several processes, each process feeds only its
    rows (:func:`vae_xai.distributed.process_rows`) and the global arrays are assembled
    from them (see :func:`_local_rows`)."""
    if jax.process_count() == 1:
        return shard_batch(batch_fn(step), mesh)
    local, size = _local_rows(batch_fn, step)
    return distributed.global_batch(local, mesh, size)


def _device_block(batch_fn: Callable[..., Batch], start: int, n: int, mesh: Mesh) -> Any:
    """Batches ``start .. start + n - 1`` stacked on a leading axis, the batch axis sharded
    over ``"data"`` (the input of :func:`~vae_xai.train.jit_steps`)."""
    sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
    multi = jax.process_count() > 1
    parts = [
        _local_rows(batch_fn, s) if multi else (batch_fn(s), None) for s in range(start, start + n)
    ]
    stacked = jax.tree.map(
        lambda *xs: np.stack([np.asarray(x) for x in xs]), *[p for p, _ in parts]
    )
    if multi:
        size = parts[0][1]
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(sharding, x, (n, size, *x.shape[2:])),
            stacked,
        )
    devices = mesh.shape[DATA_AXIS]
    for x in jax.tree.leaves(stacked):
        if x.ndim < 2 or x.shape[1] % devices:
            raise ValueError(
                f"batch leaf of shape {x.shape[1:]} cannot be split over {devices} devices: the "
                "batch size must be a multiple of the number of devices"
            )
    return jax.device_put(stacked, sharding)
