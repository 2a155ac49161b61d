"""The resumable training loop: :func:`fit`.

Restores the newest intact checkpoint of ``workdir``, draws batches from ``batch_fn(step)``
(a deterministic function of the step, so resuming also replays the data), logs metrics to
``workdir/metrics.jsonl`` and TensorBoard event files (:class:`vae_xai.metric_writer
.MetricWriter`), shows a progress bar and checkpoints on the :class:`~vae_xai.train.Schedule`.
Every step also returns finiteness flags, checked on device at each log step and before each
save, so a non-finite state is never checkpointed: a diverged run stops with
:class:`DivergenceError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh
from tqdm.auto import tqdm

from vae_xai.metric_writer import MetricWriter
from vae_xai.sharding import make_mesh, replicated
from vae_xai.train.checkpoint import (
    _abstract,
    _orbax_silent,
    _restore_latest_intact,
    _save_error,
    checkpoint_manager,
    write_checksums,
)
from vae_xai.train.feeding import _device_batch, _device_block
from vae_xai.train.probing import _PROBE, _probe_tick
from vae_xai.train.schedule import Schedule, schedule_of
from vae_xai.train.signals import Interrupted, _StopSignals
from vae_xai.train.state import Batch, TrainState, UpdateFn
from vae_xai.train.steps import jit_step, jit_steps, with_finite_flags


class DivergenceError(FloatingPointError):
    """Training produced a non-finite metric or state; nothing non-finite was checkpointed."""


def _to_float(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


def _truncate_log(path: pathlib.Path, last_step: int) -> None:
    """Drop log lines after the restored step so a resumed run does not duplicate them."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", -1) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut by a kill: drop it
            continue
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)  # atomically: a kill here loses no log line


class _NullWriter(contextlib.nullcontext):
    """Stands in for the metric writer where nothing is written (nothing left to train, or
    not process 0)."""

    def write_scalars(self, step: int, values: Mapping[str, float]) -> None:
        del step, values

    def flush(self) -> None:
        pass


def fit(
    state: TrainState,
    update_fn: UpdateFn,
    batch_fn: Callable[[int], Batch],
    *,
    workdir: str | pathlib.Path,
    num_steps: int | None = None,
    mesh: Mesh | None = None,
    seed: int = 0,
    checkpoint_every: int | None = None,
    keep_every: int | None = None,
    log_every: int | None = None,
    progress: bool = True,
    hooks: Mapping[int, Callable[[int, TrainState], None]] | None = None,
    steps_per_dispatch: int | None = None,
    schedule: Schedule | None = None,
) -> TrainState:
    """Train to ``num_steps``, resuming from the latest checkpoint in ``workdir``.

    The step schedule is either ``schedule`` or its fields as keyword arguments
    (``num_steps``, ``checkpoint_every``, ``keep_every``, ``log_every``,
    ``steps_per_dispatch``; see :class:`~vae_xai.train.Schedule`), not both.

    Args:
      state: the initial state (used as is when ``workdir`` has no checkpoint, and as the
        structure to restore into otherwise).
      update_fn: see :func:`~vae_xai.train.jit_step`.
      batch_fn: ``step -> batch`` (NumPy or JAX arrays, leading axis the batch). Must be a
        deterministic function of ``step`` so that a resumed run sees the same data.
      workdir: the run folder (``checkpoints/``, ``metrics.jsonl``, TensorBoard events).
      num_steps: total number of steps of the run (not of this call).
      mesh: device mesh (default: all devices on ``"data"``).
      seed: seeds the per-step keys.
      checkpoint_every: save period in steps (default 500); the final step is always saved.
      keep_every: keep every checkpoint whose step is a multiple of this (a multiple of
        ``checkpoint_every``) besides the latest ones; ``None``: keep only the latest.
      log_every: metrics period in steps (default 50; each log forces a device sync).
      progress: show a tqdm progress bar.
      hooks: ``{period: fn(step, state)}`` called after every ``period``-th step (e.g. eval).
      steps_per_dispatch: run this many steps per jitted call
        (:func:`~vae_xai.train.jit_steps`, a ``lax.scan`` over a block of batches) for
        dispatch-bound accelerators; same result as single steps. A block never straddles a
        checkpoint or hook step (a state exists only between blocks): the steps before such a
        boundary that do not fill a block run singly, so periods that are multiples of it
        waste nothing. Every step is still logged and checked. ``None``:
        :func:`~vae_xai.train.set_default_steps_per_dispatch` (1 unless a launcher's
        ``--steps_per_dispatch`` set it).
      schedule: the fields above as one :class:`~vae_xai.train.Schedule`.

    Returns:
      The final state.

    Raises:
      ValueError: ``num_steps < 0`` or a period < 1 (before anything is compiled).
      TypeError: both ``schedule`` and one of its fields, or neither it nor ``num_steps``.
      DivergenceError: a metric or the new parameters/model state of some step were not
        finite (found at the next log step or save, whichever comes first). The message names
        the step, the non-finite entries and the last checkpoint, which was saved before the
        divergence (every save is preceded by a check of all steps since the last one) and is
        therefore finite and kept.
    """
    schedule = schedule_of(
        schedule,
        num_steps=num_steps,
        checkpoint_every=checkpoint_every,
        keep_every=keep_every,
        log_every=log_every,
        steps_per_dispatch=steps_per_dispatch,
    )
    state, _ = _fit(
        state,
        update_fn,
        batch_fn,
        workdir=workdir,
        schedule=schedule,
        mesh=mesh,
        seed=seed,
        progress=progress,
        hooks=hooks,
    )
    return state


def _fit(
    state: TrainState,
    update_fn: UpdateFn,
    batch_fn: Callable[[int], Batch],
    *,
    workdir: str | pathlib.Path,
    schedule: Schedule,
    mesh: Mesh | None = None,
    seed: int = 0,
    progress: bool = True,
    hooks: Mapping[int, Callable[[int, TrainState], None]] | None = None,
) -> tuple[TrainState, int]:
    """:func:`fit` on a checked ``schedule``, also returning the step it started (or resumed)
    from."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed!r}")
    for period in hooks or {}:
        if not isinstance(period, int) or period < 1:
            raise ValueError(f"hook periods must be positive integers; got {period!r}")
    num_steps, checkpoint_every = schedule.num_steps, schedule.checkpoint_every
    log_every = schedule.log_every
    k = schedule.dispatch_steps()
    # a state exists only between blocks: no block straddles a save or a hook
    boundaries = (checkpoint_every, *(hooks or {}))
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = mesh or make_mesh()
    log_path = workdir / "metrics.jsonl"
    step_fn = jit_step(with_finite_flags(update_fn), mesh, seed)
    block_fn = jit_steps(with_finite_flags(update_fn), mesh, seed, k) if k > 1 else None
    # several processes (vae_xai.distributed): each feeds its rows of every global batch;
    # process 0 alone writes metrics and shows progress; all take part in checkpointing
    primary = jax.process_index() == 0

    with (
        checkpoint_manager(workdir, keep_every=schedule.keep_every) as manager,
        _StopSignals() as stop,
    ):
        restored, latest = _restore_latest_intact(manager, _abstract(state, mesh), workdir, primary)
        state = restored if latest is not None else jax.device_put(state, replicated(mesh))
        saved = latest

        def save(step: int) -> None:
            nonlocal saved
            check_finite()
            try:
                with _orbax_silent():  # a failed save is reported in one line below
                    manager.save(step, args=ocp.args.StandardSave(state), force=True)
                    manager.wait_until_finished()
                if primary:
                    write_checksums(pathlib.Path(manager.directory) / str(step))
            except Exception as err:
                raise _save_error(err, manager, step, saved) from err
            saved = step

        # drop lines logged after the restored step (or all, if killed before any checkpoint)
        if primary:
            _truncate_log(log_path, latest or 0)
        start = int(state.step)
        # (step, metrics, flags) of the steps not yet checked; device arrays, so no sync
        pending: list[tuple[int, Any, Any]] = []

        def check_finite() -> None:
            flags = jax.device_get([f for _, _, f in pending])
            for (done, metrics, _), ok in zip(pending, flags, strict=True):
                bad = [k for k, v in ok.items() if not bool(v)]
                if bad:
                    manager.wait_until_finished()
                    last = manager.latest_step()
                    where = (
                        f"the last finite checkpoint is {manager.directory / str(last)} (step "
                        f"{last}); a rerun on this workdir resumes from it and, with the same "
                        "config, diverges again at the same step"
                        if last is not None
                        else "no checkpoint was saved before it"
                    )
                    raise DivergenceError(
                        f"training diverged in {workdir}: non-finite {', '.join(bad)} at step "
                        f"{done} (metrics {_to_float(metrics)}); stopped, nothing non-finite "
                        f"was checkpointed; {where}"
                    )
            pending.clear()

        bar = tqdm(
            total=num_steps,
            initial=start,
            disable=not (progress and primary),
            desc=workdir.name,
            unit="step",
        )
        # a resumed run: TensorBoard drops the points the old files hold after the restored step
        # (no new event file when there is nothing left to train)
        resume = None if latest is None else latest + 1
        writer = (
            MetricWriter(workdir, jsonl=log_path, resume_step=resume)
            if start < num_steps and primary
            else _NullWriter()
        )
        with writer, bar:
            step = start
            if stop.signum is not None:
                raise Interrupted(stop.signum, start, pathlib.Path(manager.directory), start=start)
            probing = _PROBE.get()
            if probing is not None:
                probing = dict(probing, t_fit=time.perf_counter())
            while step < num_steps:
                # a block of k steps where one fits before the next save, hook or the end;
                # single steps up to that boundary otherwise
                fits = step + k <= num_steps and all(
                    (step // p + 1) * p >= step + k for p in boundaries
                )
                n = k if block_fn is not None and fits else 1
                if n == 1:
                    batch = _device_batch(batch_fn, step, mesh)
                    state, (metrics, flags) = step_fn(state, batch)
                    outs = [(metrics, flags)]
                else:
                    batches = _device_block(batch_fn, step, n, mesh)
                    state, (metrics, flags) = block_fn(state, batches)
                    outs = [jax.tree.map(lambda x, i=i: x[i], (metrics, flags)) for i in range(n)]
                for i, (metrics, flags) in enumerate(outs):
                    done = step + i + 1
                    pending.append((done, metrics, flags))
                    if done % log_every == 0 or done == num_steps:
                        check_finite()
                        values = _to_float(metrics)
                        writer.write_scalars(done, values)
                        writer.flush()
                        bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
                done = step + n
                for period, hook in (hooks or {}).items():
                    if done % period == 0:
                        hook(done, state)
                if done % checkpoint_every == 0 or done == num_steps:
                    save(done)
                bar.update(n)
                step = done
                if probing is not None:
                    _probe_tick(probing, done - start, state, num_steps)
                if stop.signum is not None:
                    if saved != done:
                        save(done)
                    raise Interrupted(
                        stop.signum, done, pathlib.Path(manager.directory), start=start
                    )
        manager.wait_until_finished()
    return state, start
