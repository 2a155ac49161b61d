"""When a run does what: its length, save, keep and log periods, and steps per dispatch.

One frozen :class:`Schedule` travels through the training loop instead of its fields as
separate keyword arguments. ``steps_per_dispatch=None`` means the process default, which a
launcher's ``--steps_per_dispatch`` sets once (:func:`set_default_steps_per_dispatch`): it
changes how steps are dispatched, not what is trained, so it is a setting of the process
rather than of each call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

_DEFAULT_STEPS_PER_DISPATCH = 1


def _check_steps_per_dispatch(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"steps_per_dispatch must be a positive integer; got {k!r}")


def set_default_steps_per_dispatch(k: int) -> None:
    """Set the ``steps_per_dispatch`` of later calls that do not pass one.

    Applies to every later :func:`~vae_xai.train.fit` / :func:`~vae_xai.train.train` call
    (the launchers' ``--steps_per_dispatch``). It changes how steps are dispatched, not what is
    trained (a block equals its single steps), so it is a setting of the process.

    Args:
      k: steps per jitted call, a positive integer.

    Raises:
      ValueError: ``k`` is not a positive integer.
    """
    global _DEFAULT_STEPS_PER_DISPATCH
    _check_steps_per_dispatch(k)
    _DEFAULT_STEPS_PER_DISPATCH = k


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The step schedule of a training run, checked when built (before anything compiles).

    Attributes:
      num_steps: total number of steps of the run (not of one call).
      checkpoint_every: save period in steps; the final step is always saved.
      keep_every: keep every checkpoint whose step is a multiple of this (a multiple of
        ``checkpoint_every``) besides the latest ones; ``None``: keep only the latest.
      log_every: metrics period in steps (each log forces a device sync).
      steps_per_dispatch: steps per jitted call (:func:`~vae_xai.train.jit_steps`);
        ``None``: the process default (:func:`set_default_steps_per_dispatch`, 1 unless set).
    """

    num_steps: int
    checkpoint_every: int = 500
    keep_every: int | None = None
    log_every: int = 50
    steps_per_dispatch: int | None = None

    def __post_init__(self) -> None:
        n = self.num_steps
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"num_steps must be an integer >= 0; got {n!r}")
        for name in ("checkpoint_every", "log_every"):
            period = getattr(self, name)
            if not isinstance(period, int) or period < 1:
                raise ValueError(f"{name} must be a positive integer; got {period!r}")
        keep, every = self.keep_every, self.checkpoint_every
        if keep is not None and (not isinstance(keep, int) or keep < 1 or keep % every):
            raise ValueError(
                f"keep_every must be a positive multiple of checkpoint_every={every} "
                f"(a kept step must be a saved step); got {keep!r}"
            )
        if self.steps_per_dispatch is not None:
            _check_steps_per_dispatch(self.steps_per_dispatch)

    def dispatch_steps(self) -> int:
        """``steps_per_dispatch``, or the process default when it is ``None``.

        Returns:
          A positive integer: how many steps one jitted call runs.
        """
        k = (
            _DEFAULT_STEPS_PER_DISPATCH
            if self.steps_per_dispatch is None
            else self.steps_per_dispatch
        )
        _check_steps_per_dispatch(k)
        return k


def schedule_of(
    schedule: Schedule | None,
    *,
    num_steps: int | None = None,
    checkpoint_every: int | None = None,
    keep_every: int | None = None,
    log_every: int | None = None,
    steps_per_dispatch: int | None = None,
) -> Schedule:
    """The :class:`Schedule` of a :func:`~vae_xai.train.fit` / :func:`~vae_xai.train.train` call.

    ``schedule`` as given, or one built from the separate keyword arguments (``None`` meaning
    the field's default), so both forms of the call work.

    Args:
      schedule: a ready schedule, or ``None`` to build one from the fields.
      num_steps: see :class:`Schedule`.
      checkpoint_every: see :class:`Schedule`.
      keep_every: see :class:`Schedule`.
      log_every: see :class:`Schedule`.
      steps_per_dispatch: see :class:`Schedule`.

    Returns:
      The schedule.

    Raises:
      TypeError: both ``schedule`` and a field were given, neither ``schedule`` nor
        ``num_steps``, or ``schedule`` is not a :class:`Schedule`.
      ValueError: a field is out of range (from :class:`Schedule`).
    """
    fields = {
        "num_steps": num_steps,
        "checkpoint_every": checkpoint_every,
        "keep_every": keep_every,
        "log_every": log_every,
        "steps_per_dispatch": steps_per_dispatch,
    }
    given = {k: v for k, v in fields.items() if v is not None}
    if schedule is not None:
        if given:
            raise TypeError(
                f"pass either schedule= or its fields, not both (got schedule and {sorted(given)})"
            )
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule; got {type(schedule).__name__}")
        return schedule
    if num_steps is None:
        raise TypeError("missing the keyword argument num_steps (or schedule=)")
    return Schedule(**given)
