"""Jitted training steps on a mesh: one step per call, or a block of steps per call.

``update_fn(state, batch, key) -> (state, metrics)`` is a pure function; :func:`jit_step`
compiles it with the state donated, the batch sharded over the mesh's ``"data"`` axis and
everything else replicated. The step's PRNG key is ``fold_in(seed_key, state.step)``, so a
resumed run replays exactly the keys of an uninterrupted one. :func:`with_finite_flags` adds
the finiteness flags the loop checks before it logs or saves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vae_xai.sharding import DATA_AXIS, batch_sharding, replicated
from vae_xai.train.state import Batch, TrainState, UpdateFn, _all_finite


def _keyed_step(update_fn: UpdateFn) -> Callable[..., Any]:
    """``update_fn`` with the per-step key ``fold_in(key, state.step)`` and the step
    counter advanced: one step of :func:`jit_step`, and the scan body of :func:`jit_steps`.
    The key (its raw bits) is an argument, not a constant of the program, so the runs of every seed
    compile to one program (and XLA's persistent compilation cache, where enabled, serves
    them all)."""

    def step(
        state: TrainState, batch: Batch, key_data: jax.Array
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        key = jax.random.fold_in(jax.random.wrap_key_data(key_data), state.step)
        new_state, metrics = update_fn(state, batch, key)
        return new_state.replace(step=state.step + 1), metrics

    return step


def _bind_key(jitted: Callable[..., Any], seed: int, mesh: Mesh) -> Callable[..., Any]:
    """``jitted(state, batch, key_data(key(seed)))`` as ``fn(state, batch)``: the raw key
    bits, replicated over the mesh (also across processes)."""
    data = np.asarray(jax.random.key_data(jax.random.key(seed)))
    base = jax.make_array_from_process_local_data(replicated(mesh), data, data.shape)

    @functools.wraps(jitted)
    def call(state: TrainState, batch: Batch):
        return jitted(state, batch, base)

    return call


def jit_step(update_fn: UpdateFn, mesh: Mesh, seed: int = 0) -> Callable[..., Any]:
    """Compile ``update_fn`` for the mesh as ``step(state, batch) -> (state, metrics)``.

    The state is donated (its buffers are reused for the new state) and replicated; the batch
    is sharded over ``"data"``; the per-step key is ``fold_in(key(seed), state.step)``. The key
    is an argument of the compiled program, not a constant, so runs of every seed share one
    compilation.

    Args:
      update_fn: ``(state, batch, key) -> (state, metrics)``, pure.
      mesh: the device mesh (:func:`vae_xai.sharding.make_mesh`).
      seed: seed of the run's base PRNG key.

    Returns:
      The compiled step; it advances ``state.step`` by one.
    """
    rep = replicated(mesh)
    jitted = jax.jit(
        _keyed_step(update_fn),
        in_shardings=(rep, batch_sharding(mesh), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
    return _bind_key(jitted, seed, mesh)


def jit_steps(
    update_fn: UpdateFn, mesh: Mesh, seed: int = 0, steps: int = 1, *, unroll: bool | None = None
) -> Callable[..., Any]:
    """Compile ``steps`` training steps per call, as one ``lax.scan`` over a block of batches.

    ``block(state, batches) -> (state, metrics)``: every leaf of ``batches`` has a leading
    axis of ``steps`` (then the batch axis, sharded over ``"data"``), the metrics get the same
    leading axis. Step ``i`` of the block is exactly step ``state.step + i`` of
    :func:`jit_step` (same key, same update), so ``k`` single steps and one block of ``k`` give
    the same state; one dispatch instead of ``k`` pays on accelerators, where a small model's
    step is shorter than the host's dispatch and data transfer.

    Args:
      update_fn: ``(state, batch, key) -> (state, metrics)``, pure.
      mesh: the device mesh.
      seed: seed of the run's base PRNG key.
      steps: steps per call (a positive integer).
      unroll: write the ``steps`` steps out instead of a loop; default: on the CPU backend
        only. XLA CPU runs our conv steps inside a while loop many times slower, while
        accelerators want the rolled loop (compile time independent of ``steps``).

    Returns:
      The compiled block function.

    Raises:
      ValueError: ``steps`` is not a positive integer.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (per dispatch) must be a positive integer; got {steps!r}")
    if unroll is None:
        unroll = jax.default_backend() == "cpu"
    rep = replicated(mesh)
    one = _keyed_step(update_fn)

    def block(state: TrainState, batches: Batch, key_data: jax.Array):
        return jax.lax.scan(
            lambda st, b: one(st, b, key_data), state, batches, unroll=steps if unroll else 1
        )

    jitted = jax.jit(
        block,
        in_shardings=(rep, NamedSharding(mesh, PartitionSpec(None, DATA_AXIS)), rep),
        out_shardings=(rep, rep),
        donate_argnums=(0,),
    )
    return _bind_key(jitted, seed, mesh)


def with_finite_flags(update_fn: UpdateFn) -> UpdateFn:
    """Wrap ``update_fn`` so that its metrics also say what is finite.

    The loop checks these flags on device before it logs or saves, so a non-finite state is
    never checkpointed.

    Args:
      update_fn: ``(state, batch, key) -> (state, metrics)``.

    Returns:
      An update function whose metrics are ``(metrics, flags)``: ``flags[name]`` says whether
      metric ``name`` is finite, ``flags["params/model_state"]`` whether the new state is.
    """

    def update(state: TrainState, batch: Batch, key: jax.Array):
        new_state, metrics = update_fn(state, batch, key)
        flags = {k: jnp.all(jnp.isfinite(v)) for k, v in metrics.items()}
        flags["params/model_state"] = _all_finite((new_state.params, new_state.model_state))
        return new_state, (metrics, flags)

    return update
