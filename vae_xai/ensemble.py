"""Seed ensembles: the seeds of one config trained as one vmapped, jitted step.

Disentanglement results are reported over many seeds; trained one after another, each seed
pays its own compile and its own dispatch per step. Here the ``S`` seeds' states are stacked
along a leading axis and one jitted step updates all of them (``jax.vmap`` of the ordinary
update function): one compile, one dispatch per step for all seeds. Member ``i`` sees exactly
what a separate run of seed ``seeds[i]`` sees: its own initial state, its own batches
(``batch_fns[i]``) and its own per-step keys (``fold_in(key(seed), step)``, as in
:func:`vae_xai.train.jit_step`), so it equals that run to float tolerance
(``tests/test_ensemble.py``).

This pays on accelerators, where one small conv VAE uses a fraction of the chip. On a CPU the
step is compute-bound already, and vmapping a conv over stacked kernels makes it a grouped
convolution that XLA CPU runs slowly, so an ensemble step costs more per seed than sequential
seeds (measured in RESULTS.md, section "Seed ensembles and several steps per dispatch on
CPU"); sequential seeds stay the default there.

Checkpoints, resume and the finiteness checks are :func:`vae_xai.train.fit`'s, on the stacked
state in the ensemble's workdir; metrics are logged per member (``loss/seed3``). After
training (and at every checkpoint), each member's state is also saved as an ordinary
checkpoint in its own ``member_workdirs[i]``, so everything that reads a separate run's
checkpoint (evaluation, ``restore_params``) reads a member unchanged.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vae_xai import distributed, train
from vae_xai.train import TrainState, UpdateFn

__all__ = [
    "ensemble_batch_fn",
    "ensemble_update_fn",
    "fit_ensemble",
    "member",
    "per_member",
    "stack",
]

# state.step is shared by all members (they advance together); the rest is stacked on axis 0
_STATE_AXES = TrainState(step=None, params=0, opt_state=0, model_state=0)


def stack(states: Sequence[TrainState]) -> TrainState:
    """Stack ``S`` member states into one state whose arrays have a leading axis ``S``.

    Args:
      states: the members' states, all at the same step and of the same structure.

    Returns:
      The stacked state (``step`` shared, not stacked).

    Raises:
      ValueError: no states, different steps, or different structures.
    """
    if not states:
        raise ValueError("an ensemble needs at least one member state")
    steps = {int(s.step) for s in states}
    if len(steps) != 1:
        raise ValueError(f"ensemble members must start at the same step; got steps {steps}")
    structure = jax.tree.structure(states[0])
    for i, s in enumerate(states[1:], 1):
        if jax.tree.structure(s) != structure:
            raise ValueError(f"ensemble member {i} has another state structure than member 0")
    return TrainState(
        step=states[0].step,
        params=jax.tree.map(lambda *x: jnp.stack(x), *[s.params for s in states]),
        opt_state=jax.tree.map(lambda *x: jnp.stack(x), *[s.opt_state for s in states]),
        model_state=jax.tree.map(lambda *x: jnp.stack(x), *[s.model_state for s in states]),
    )


def member(state: TrainState, i: int) -> TrainState:
    """Member ``i`` of a stacked state, as an ordinary state.

    Args:
      state: a stacked state (:func:`stack`).
      i: the member index.

    Returns:
      The member's state.
    """
    return TrainState(
        step=state.step,
        params=jax.tree.map(lambda x: x[i], state.params),
        opt_state=jax.tree.map(lambda x: x[i], state.opt_state),
        model_state=jax.tree.map(lambda x: x[i], state.model_state),
    )


def ensemble_update_fn(update_fn: UpdateFn, seeds: Sequence[int]) -> UpdateFn:
    """Vmap ``update_fn`` over stacked states and batches; metrics per member.

    The step key :func:`vae_xai.train.jit_step` passes in is ignored: member ``i`` gets
    ``fold_in(key(seeds[i]), step)``, the key its separate run would get.

    Args:
      update_fn: the ordinary, single-member update function.
      seeds: the members' seeds, distinct.

    Returns:
      An update function over a stacked state and batches ``(B, S, ...)``; its metrics are
      named ``"<name>/seed<seed>"`` (see :func:`per_member`).

    Raises:
      ValueError: repeated seeds.
    """
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"ensemble seeds must be distinct; got {seeds}")

    def update(state: TrainState, batch: Any, key: jax.Array):
        del key
        keys = jnp.stack([jax.random.fold_in(jax.random.key(s), state.step) for s in seeds])

        def one(st: TrainState, b: Any, k: jax.Array):
            new, metrics = update_fn(st, b, k)
            return new.replace(step=st.step), metrics

        new_state, metrics = jax.vmap(one, in_axes=(_STATE_AXES, 1, 0), out_axes=(_STATE_AXES, 0))(
            state, batch, keys
        )
        flat = {f"{name}/seed{s}": v[i] for name, v in metrics.items() for i, s in enumerate(seeds)}
        return new_state, flat

    return update


def ensemble_batch_fn(batch_fns: Sequence[Callable[[int], Any]]) -> Callable[[int], Any]:
    """Combine per-member ``step -> batch`` functions into one for the stacked state.

    The batch axis comes first, so it is what the mesh shards. When every member's function
    reads rows on request (a ``global_batch_size`` attribute, see :func:`vae_xai.train.fit`),
    so does this one.

    Args:
      batch_fns: one ``step -> batch`` function per member.

    Returns:
      ``batch_fn(step)`` whose leaves are ``(B, S, ...)``.
    """
    fns = list(batch_fns)
    sizes = {getattr(fn, "global_batch_size", None) for fn in fns}

    def batch_fn(step: int, rows: slice | None = None) -> Any:
        parts = [fn(step) if rows is None else fn(step, rows=rows) for fn in fns]
        return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs], axis=1), *parts)

    if len(sizes) == 1 and None not in sizes:
        batch_fn.global_batch_size = sizes.pop()  # type: ignore[attr-defined]
    return batch_fn


def fit_ensemble(
    states: Sequence[TrainState],
    update_fn: UpdateFn,
    batch_fns: Sequence[Callable[[int], Any]],
    *,
    seeds: Sequence[int],
    workdir: str | pathlib.Path,
    num_steps: int,
    member_workdirs: Sequence[str | pathlib.Path] | None = None,
    checkpoint_every: int = 500,
    log_every: int = 50,
    progress: bool = True,
    mesh: Any = None,
    steps_per_dispatch: int | None = None,
) -> list[TrainState]:
    """Train ``len(seeds)`` members as one vmapped step and return the members' final states.

    ``states[i]``, ``batch_fns[i]`` and ``seeds[i]`` are what a separate run of that seed
    would get (:func:`vae_xai.train.fit`'s ``state``, ``batch_fn`` and ``seed``).

    Args:
      states: the members' initial states.
      update_fn: the ordinary, single-member update function.
      batch_fns: the members' ``step -> batch`` functions.
      seeds: the members' seeds, distinct.
      workdir: where the stacked state is checkpointed and resumed.
      num_steps: total number of steps of the run.
      member_workdirs: if given, each member is also saved (at every checkpoint and at the
        end) as an ordinary checkpoint of a separate run in ``member_workdirs[i]``.
      checkpoint_every: save period in steps.
      log_every: metrics period in steps.
      progress: show a progress bar.
      mesh: device mesh (default: all devices on ``"data"``).
      steps_per_dispatch: as for :func:`vae_xai.train.fit`.

    Returns:
      The members' final states (with several processes, this process's copies).

    Raises:
      ValueError: inconsistent numbers of states, batch functions, seeds and member folders;
        or as :func:`vae_xai.train.fit`.
    """
    if not len(states) == len(batch_fns) == len(seeds):
        raise ValueError(
            f"one state, batch_fn and seed per member; got {len(states)}, {len(batch_fns)}, "
            f"{len(seeds)}"
        )
    if member_workdirs is not None and len(member_workdirs) != len(seeds):
        raise ValueError(f"member_workdirs: {len(member_workdirs)} folders for {len(seeds)} seeds")

    def export(step: int, state: TrainState) -> None:
        if member_workdirs is None:
            return
        for i, path in enumerate(member_workdirs):
            one = member(state, i)
            # hooks run before fit's own finiteness check and save: never export a NaN member
            if not bool(train._all_finite((one.params, one.model_state))):
                return
            with train.checkpoint_manager(path) as manager:
                if step not in manager.all_steps():
                    manager.save(step, args=ocp.args.StandardSave(one))
                    manager.wait_until_finished()
                    train.write_checksums(f"{manager.directory}/{step}")
                manager.wait_until_finished()

    state = train.fit(
        stack(states),
        ensemble_update_fn(update_fn, seeds),
        ensemble_batch_fn(batch_fns),
        workdir=workdir,
        num_steps=num_steps,
        mesh=mesh,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        progress=progress,
        hooks={checkpoint_every: export} if member_workdirs is not None else None,
        steps_per_dispatch=steps_per_dispatch,
    )
    export(int(state.step), state)
    return [distributed.local_copy(member(state, i)) for i in range(len(seeds))]


def per_member(metrics: Mapping[str, float], seeds: Sequence[int]) -> dict[int, dict[str, float]]:
    """Split per-member metrics by seed: ``{"loss/seed3": v, ...}`` -> ``{3: {"loss": v}, ...}``.

    Args:
      metrics: metrics named ``"<name>/seed<seed>"``.
      seeds: the members' seeds.

    Returns:
      ``{seed: {name: value}}``; names of unknown seeds are dropped.
    """
    out: dict[int, dict[str, float]] = {int(s): {} for s in seeds}
    for key, value in metrics.items():
        name, _, tag = key.rpartition("/seed")
        if name and tag.lstrip("-").isdigit() and int(tag) in out:
            out[int(tag)][name] = value
    return out
