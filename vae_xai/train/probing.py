"""Timing a training run instead of running it (``experiments.reproduce --estimate``).

Inside :func:`probe`, :func:`~vae_xai.train.fit` reads the context variable ``_PROBE`` and
calls :func:`_probe_tick` after each dispatch, which raises :class:`ProbeDone` once the asked
number of steps is timed: no special code per experiment.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Any

import jax


class ProbeDone(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by :func:`~vae_xai.train.fit` inside :func:`probe` once the probed steps are timed.

    Attributes:
      info: ``{"setup_s", "compile_s", "s_per_step", "steps_timed", "num_steps"}``.
    """

    def __init__(self, info: dict[str, Any]):
        super().__init__(f"probe done: {info}")
        self.info = info


_PROBE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "vae_xai_train_probe", default=None
)


@contextlib.contextmanager
def probe(steps: int = 5):
    """Time the next :func:`~vae_xai.train.fit` call instead of running it to the end.

    Inside this context, ``fit`` runs its first step (compilation included) and ``steps``
    more, then raises :class:`ProbeDone` with the setup time (from entering the context to
    the first step: data loading, initialization), the first step's time, and the mean seconds
    per step of the timed steps. Used by ``experiments.reproduce --estimate`` to project a
    job's training time on the current device without special code per experiment.

    Args:
      steps: how many steps after the first to time.

    Raises:
      ValueError: ``steps`` is not a positive integer.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"probe steps must be a positive integer; got {steps!r}")
    token = _PROBE.set({"steps": steps, "t_enter": time.perf_counter()})
    try:
        yield
    finally:
        _PROBE.reset(token)


def _probe_tick(probe_state: dict[str, Any], done_steps: int, state: Any, num_steps: int) -> None:
    """Called after each dispatch inside :func:`probe`; raises :class:`ProbeDone` when done."""
    jax.block_until_ready(state)
    now = time.perf_counter()
    if "t_first" not in probe_state:
        probe_state.update(t_first=now, first_done=done_steps, t_start=probe_state["t_fit"])
        return
    timed = done_steps - probe_state["first_done"]
    if timed >= probe_state["steps"]:
        raise ProbeDone(
            {
                "setup_s": probe_state["t_fit"] - probe_state["t_enter"],
                "compile_s": probe_state["t_first"] - probe_state["t_fit"],
                "s_per_step": (now - probe_state["t_first"]) / timed,
                "steps_timed": timed,
                "num_steps": num_steps,
            }
        )
