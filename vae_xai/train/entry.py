"""The one training entry every launcher calls: :func:`train`.

:func:`~vae_xai.train.fit` plus what a run reports about itself (:class:`TrainInfo`: steps,
steps run by this call, wall time of this call and accumulated over resumed calls in
``workdir/train_wall.json``, last logged metrics).
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

import jax
from jax.sharding import Mesh

from vae_xai import distributed
from vae_xai.train.checkpoint import _first_line
from vae_xai.train.loop import _fit
from vae_xai.train.schedule import Schedule, schedule_of
from vae_xai.train.signals import Interrupted
from vae_xai.train.state import Batch, TrainState, UpdateFn
from vae_xai.workdir import StateFileError, read_state_json, write_json_atomic

TRAIN_WALL_FILE = "train_wall.json"


class TrainInfo(TypedDict):
    """What :func:`train` reports (a dict, so it goes into ``results.json`` as is).

    Attributes:
      steps: the step of the returned state.
      steps_run: steps this call trained (0 when the workdir already held the final checkpoint).
      wall_s: this call's seconds (restore and compilation included).
      total_wall_s: the seconds of every call on this workdir that trained, accumulated in
        ``workdir/train_wall.json``.
      last: the last line of ``workdir/metrics.jsonl`` (``{}`` if none).
    """

    steps: int
    steps_run: int
    wall_s: float
    total_wall_s: float
    last: dict[str, Any]


def _last_logged(log_path: pathlib.Path) -> dict[str, Any]:
    if not log_path.exists():
        return {}
    for line in reversed(log_path.read_text().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # blank, or cut by a kill
            continue
    return {}


def _read_wall(path: pathlib.Path) -> float:
    """The accumulated training seconds of ``train_wall.json``; bookkeeping, so a file that
    cannot be read is reported and counted from 0 again (rewritten at the end), not fatal."""
    if not path.exists():
        return 0.0
    try:
        return float(read_state_json(path, fix="")["seconds"])
    except (ValueError, KeyError, TypeError) as err:
        # (a StateFileError already names the file and the reason)
        what = str(err) if isinstance(err, StateFileError) else f"{path}: {_first_line(err)}"
        logging.warning(
            "%s: total_wall_s counts from this call on; it is rewritten when this call has trained",
            what,
        )
        return 0.0


def train(
    state: TrainState,
    update_fn: UpdateFn,
    batch_fn: Callable[[int], Batch],
    *,
    workdir: str | pathlib.Path,
    num_steps: int | None = None,
    seed: int = 0,
    checkpoint_every: int | None = None,
    keep_every: int | None = None,
    log_every: int | None = None,
    progress: bool = True,
    mesh: Mesh | None = None,
    hooks: Mapping[int, Callable[[int, TrainState], None]] | None = None,
    steps_per_dispatch: int | None = None,
    schedule: Schedule | None = None,
) -> tuple[TrainState, TrainInfo]:
    """The one training entry: :func:`~vae_xai.train.fit`, and a :class:`TrainInfo` of the call.

    Resumes from the latest checkpoint in ``workdir``. The wall time of a call that trained
    at least one step is added to ``workdir/train_wall.json`` (``{"seconds", "step"}``,
    written atomically), so ``total_wall_s`` is the training cost of the whole run however
    often it was resumed (a call stopped by SIGTERM/SIGINT after training adds its time
    too); a call with nothing left to train writes nothing.

    Args:
      state: as for :func:`~vae_xai.train.fit`.
      update_fn: as for :func:`~vae_xai.train.fit`.
      batch_fn: as for :func:`~vae_xai.train.fit`.
      workdir: as for :func:`~vae_xai.train.fit`.
      num_steps: a field of the :class:`~vae_xai.train.Schedule`, when ``schedule`` is not given.
      seed: as for :func:`~vae_xai.train.fit`.
      checkpoint_every: a :class:`~vae_xai.train.Schedule` field.
      keep_every: a :class:`~vae_xai.train.Schedule` field.
      log_every: a :class:`~vae_xai.train.Schedule` field.
      progress: as for :func:`~vae_xai.train.fit`.
      mesh: as for :func:`~vae_xai.train.fit`.
      hooks: as for :func:`~vae_xai.train.fit`.
      steps_per_dispatch: a :class:`~vae_xai.train.Schedule` field.
      schedule: the step schedule as one object.

    Returns:
      ``(state, info)``: the final state (with several processes, this process's copy, for
      the evaluation that follows) and the :class:`TrainInfo` of this call.

    Raises:
      As :func:`~vae_xai.train.fit`, and :class:`~vae_xai.train.Interrupted` after a signal.
    """
    schedule = schedule_of(
        schedule,
        num_steps=num_steps,
        checkpoint_every=checkpoint_every,
        keep_every=keep_every,
        log_every=log_every,
        steps_per_dispatch=steps_per_dispatch,
    )
    workdir = pathlib.Path(workdir)
    wall_path = workdir / TRAIN_WALL_FILE
    before = _read_wall(wall_path)
    t0 = time.perf_counter()
    # (the start step comes from fit's own restore: a look at the folder here could differ
    # between processes and send them into different collective calls)
    try:
        state, start = _fit(
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
    except Interrupted as err:  # the steps saved for the signal cost time too
        if err.step > err.start and jax.process_index() == 0:
            write_json_atomic(
                wall_path, {"seconds": before + time.perf_counter() - t0, "step": err.step}
            )
        raise
    wall = time.perf_counter() - t0
    steps = int(state.step)
    steps_run = steps - start
    total = before
    if steps_run > 0:
        total = before + wall
        write_json_atomic(wall_path, {"seconds": total, "step": steps})
    info = TrainInfo(
        steps=steps,
        steps_run=steps_run,
        wall_s=wall,
        total_wall_s=total,
        last=_last_logged(workdir / "metrics.jsonl"),
    )
    # several processes: the evaluation that follows runs on this process's copy
    return distributed.local_copy(state), info
