"""Several processes, one mesh: multi-process data parallelism on JAX's distributed runtime.

One process per host (or per GPU), all running the same program. After :func:`initialize`,
``jax.devices()`` lists the devices of every process, :func:`vae_xai.sharding.make_mesh` puts
them all on the ``"data"`` axis, parameters stay replicated, and each global batch is split by
rows: process ``p`` of ``P`` owns rows ``[p * B / P, (p + 1) * B / P)`` of global batch ``B``
(:func:`process_rows`), reads only those (a deterministic function of the step and the process
index, so a resumed run replays the same data), and :func:`global_batch` assembles the global
array with ``jax.make_array_from_process_local_data``. Checkpoints go through orbax's
multi-process path (every process calls save; orbax coordinates who writes what); metrics,
figures, ``run.json`` and results are written by process 0 only (:func:`is_primary`).
Evaluation is sharded by batches (:func:`map_batches`): each process computes its share of
the evaluation batches with its local copy of the parameters (:func:`local_copy`), and the
outputs are exchanged, so every process holds the same maps and numbers.

How a launch looks:

* one process (a laptop CPU, one GPU, a Colab TPU with its 8 local devices): nothing to do;
* several processes started by hand (or by a script), e.g. 2 hosts::

      python -m experiments.quickstart --workdir=W --coordinator_address=host0:1234 \\
          --num_processes=2 --process_id=0      # on host0
      python -m experiments.quickstart --workdir=W --coordinator_address=host0:1234 \\
          --num_processes=2 --process_id=1      # on host1

  (``W`` must be one shared folder, e.g. NFS or a GCS path orbax can write);
* a Cloud TPU pod slice or a SLURM job: ``--distributed`` and JAX detects the rest.

On CPU, the cross-process collectives use gloo (set here before the backend starts); tests run
2 local processes with 2 fake CPU devices each (``tests/test_distributed.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from vae_xai.sharding import batch_sharding

__all__ = [
    "DistributedConfigError",
    "global_batch",
    "initialize",
    "is_primary",
    "local_copy",
    "map_batches",
    "process_rows",
    "sync",
]

DEFAULT_TIMEOUT_S = 120


class DistributedConfigError(ValueError):
    """A bad combination of the distributed flags, or a batch that cannot be split over processes.

    The flags are ``--coordinator_address`` / ``--num_processes`` / ``--process_id``.
    """


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    timeout_s: int = DEFAULT_TIMEOUT_S,
) -> bool:
    """Start ``jax.distributed`` when asked to; returns whether more than one process runs.

    Args:
      coordinator_address: ``host:port`` of process 0. Given: ``num_processes`` and
        ``process_id`` must be too (checked here, before anything connects).
      num_processes: this launch's number of processes.
      process_id: this process's index, in ``0..num_processes - 1``.
      auto: no address given: let JAX detect the cluster (Cloud TPU pods, SLURM, ...).
      timeout_s: how long to wait for the other processes before failing (JAX's default is
        minutes; a mistyped address should fail sooner).

    With neither an address nor ``auto`` this does nothing (one process). Calling it again
    after a successful start is a no-op.

    Returns:
      Whether more than one process runs.

    Raises:
      DistributedConfigError: an incomplete or inconsistent combination of the arguments.
    """
    explicit = (coordinator_address, num_processes, process_id)
    if coordinator_address is None and not auto:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise DistributedConfigError(
                "num_processes/process_id are set but coordinator_address is not: give "
                "--coordinator_address=HOST:PORT of process 0 (or --distributed to auto-detect)"
            )
        return False
    if coordinator_address is not None:
        if num_processes is None or process_id is None:
            raise DistributedConfigError(
                f"coordinator_address={coordinator_address!r} needs num_processes and process_id "
                f"too; got num_processes={num_processes}, process_id={process_id}"
            )
        if int(num_processes) < 1:
            raise DistributedConfigError(f"num_processes must be >= 1; got {num_processes}")
        if not 0 <= int(process_id) < int(num_processes):
            raise DistributedConfigError(
                f"process_id must be in 0..{int(num_processes) - 1}; got {process_id}"
            )
        if ":" not in coordinator_address:
            raise DistributedConfigError(
                f"coordinator_address must be HOST:PORT; got {coordinator_address!r}"
            )
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    # CPU processes exchange collectives over gloo; must be set before the CPU backend starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs: dict[str, Any] = {"initialization_timeout": int(timeout_s)}
    if coordinator_address is not None:
        kwargs.update(
            coordinator_address=coordinator_address,
            num_processes=int(explicit[1]),
            process_id=int(explicit[2]),
        )
    jax.distributed.initialize(**kwargs)
    return jax.process_count() > 1


def is_primary() -> bool:
    """Whether this process writes metrics, figures, ``run.json`` and results (process 0)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier across processes (no-op with one process).

    Args:
      name: the barrier's name; every process must pass the same one.
    """
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def process_rows(
    global_size: int, *, process_index: int | None = None, process_count: int | None = None
) -> slice:
    """The rows of a global batch that this process reads and feeds.

    Contiguous blocks in process order, matching how ``make_array_from_process_local_data``
    lays out the ``"data"`` axis when every process's devices are consecutive in the mesh
    (as in :func:`vae_xai.sharding.make_mesh` over ``jax.devices()``).

    Args:
      global_size: rows of the global batch.
      process_index: this process's index; ``None``: ``jax.process_index()``.
      process_count: the number of processes; ``None``: ``jax.process_count()``.

    Returns:
      This process's ``slice`` of rows.

    Raises:
      DistributedConfigError: ``global_size`` is not a multiple of the number of processes.
    """
    p = jax.process_index() if process_index is None else int(process_index)
    n = jax.process_count() if process_count is None else int(process_count)
    if global_size % n:
        raise DistributedConfigError(
            f"the global batch of {global_size} rows cannot be split evenly over {n} processes: "
            f"use a batch size that is a multiple of {n}"
        )
    per = global_size // n
    return slice(p * per, (p + 1) * per)


def global_batch(local: Mapping[str, Any] | Any, mesh: Mesh, global_size: int) -> Any:
    """Assemble global arrays from this process's rows of a batch.

    Args:
      local: a pytree of arrays with ``global_size / P`` leading rows (this process's rows).
      mesh: the mesh.
      global_size: rows of the global batch.

    Returns:
      The pytree of global arrays of ``global_size`` rows, split over the ``"data"`` axis.
    """
    sharding = batch_sharding(mesh)

    def put(x: Any) -> jax.Array:
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (global_size, *x.shape[1:]))

    return jax.tree.map(put, local)


def local_copy(tree: Any) -> Any:
    """Replace every replicated global array in ``tree`` by this process's copy of it.

    After multi-process training the parameters are global arrays over the devices of every
    process (replicated). Evaluation code that mixes them with arrays of this process (images,
    keys) needs them as local arrays; this is a no-op for arrays this process holds entirely
    (one process, however many local devices).

    Args:
      tree: a pytree.

    Returns:
      The pytree with local arrays.

    Raises:
      ValueError: a global array that is not replicated (naming its shape and sharding).
    """

    def one(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            return x
        if not x.is_fully_replicated:
            raise ValueError(
                f"a global array of shape {x.shape} with sharding {x.sharding} is split over "
                "processes; only replicated arrays have a local copy"
            )
        return x.addressable_data(0)

    return jax.tree.map(one, tree)


def map_batches(fn: Callable[[int], Any], num_batches: int) -> list[Any]:
    """``[fn(b) for b in range(num_batches)]`` as NumPy, the batches split over the processes.

    Sharded evaluation: with ``P`` processes, process ``p`` computes batches ``p, p + P, ...``
    on its own devices, and the outputs are exchanged
    (``multihost_utils.process_allgather``) so that every process returns all of them, in
    order. Each batch is computed exactly as one process would compute it, so the result does
    not depend on the number of processes. With one process this is the list comprehension
    (outputs converted to NumPy).

    Args:
      fn: ``b -> pytree of arrays`` of the same structure and shapes for every ``b`` (a
        padded batch).
      num_batches: number of batches (>= 0).

    Returns:
      The ``num_batches`` outputs, in order, on every process.

    Raises:
      ValueError: ``num_batches < 0``.
    """
    if num_batches < 0:
        raise ValueError(f"num_batches must be >= 0; got {num_batches}")
    count = jax.process_count()
    if count == 1 or num_batches == 0:
        return [jax.device_get(fn(b)) for b in range(num_batches)]
    index = jax.process_index()
    per = -(-num_batches // count)
    mine = [jax.device_get(fn(b)) for b in range(index, num_batches, count)]
    # every process sends the same number of outputs; fillers (repeats) are dropped below
    filler = mine[0] if mine else jax.device_get(fn(num_batches - 1))
    mine += [filler] * (per - len(mine))
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *mine)
    gathered = multihost_utils.process_allgather(stacked, tiled=False)  # (P, per, ...)
    return [
        jax.tree.map(lambda x, b=b: np.asarray(x[b % count, b // count]), gathered)
        for b in range(num_batches)
    ]
