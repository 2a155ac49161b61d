"""The training state: one pytree of step, parameters, optimizer state and model state.

A pytree so that a step can be jitted, sharded and checkpointed as one object; the layout of
its fields is the layout of every checkpoint (changing it would make old runs unreadable).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

Batch = Mapping[str, Any]
UpdateFn = Callable[["TrainState", Batch, jax.Array], tuple["TrainState", dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: a pytree of arrays.

    Attributes:
      step: the number of steps taken, an int32 scalar.
      params: the trained parameters.
      opt_state: the optimizer state.
      model_state: other model collections (e.g. BatchNorm ``batch_stats``) or a second
        network's state; ``{}`` if none.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any = flax.struct.field(default_factory=dict)


def create_state(
    params: Any, optimizer: optax.GradientTransformation, model_state: Any = None
) -> TrainState:
    """A fresh :class:`TrainState` at step 0.

    Args:
      params: the initial parameters.
      optimizer: the optimizer; its state is ``optimizer.init(params)``.
      model_state: the initial model state; ``None`` gives ``{}``.

    Returns:
      The state.
    """
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        model_state={} if model_state is None else model_state,
    )


def init_state(
    model: Any,
    optimizer: optax.GradientTransformation,
    input_shape: Sequence[int],
    *,
    seed: int = 0,
    key: jax.Array | None = None,
) -> TrainState:
    """A fresh :class:`TrainState` for a Flax ``model`` on inputs ``(B, *input_shape)``.

    Runs ``model.init(key, zeros((1, *input_shape)), train=False)``; non-``params`` collections
    (BatchNorm's ``batch_stats``) go to ``state.model_state``. The init key defaults to
    ``jax.random.key(seed, impl="rbg")``: XLA compiles a threefry draw per parameter shape,
    which makes initializing a large model (a ResNet) slow to compile on CPU, while ``rbg`` is
    cheap. Initial values are then backend-specific (resuming is unaffected: it restores the
    checkpoint); pass a threefry ``key`` to override.

    Args:
      model: a Flax Linen module whose ``init`` accepts ``train=False``.
      optimizer: the optimizer.
      input_shape: the shape of one input, without the batch axis.
      seed: seed of the default ``rbg`` init key.
      key: an explicit init key (overrides ``seed``).

    Returns:
      The state at step 0.
    """
    x = jnp.zeros((1, *input_shape), jnp.float32)
    key = jax.random.key(seed, impl="rbg") if key is None else key
    variables = dict(jax.jit(functools.partial(model.init, train=False))(key, x))
    params = variables.pop("params")
    return create_state(params, optimizer, variables)


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite, as a device scalar (no sync):
    what a step reports about its new state and what a restore checks."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)
