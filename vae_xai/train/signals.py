"""Stopping on a signal: SIGTERM or SIGINT during training saves the current step first.

A preemption notice from Colab, TPU VMs or SLURM is a SIGTERM; :func:`~vae_xai.train.fit`
checks for one after every dispatch, saves and raises :class:`Interrupted`.
"""

from __future__ import annotations

import logging
import pathlib
import signal
import threading
from typing import Any


class Interrupted(KeyboardInterrupt):
    """:func:`~vae_xai.train.fit` stopped on SIGTERM or SIGINT after saving the current step.

    A ``KeyboardInterrupt``, so a notebook's interrupt behaves as usual; rerunning the same
    command resumes from ``step``.

    Attributes:
      signum: the signal number.
      step: the step that was saved.
      start: the step this call started (or resumed) from, so ``step - start`` steps were
        trained.
      exit_code: ``128 + signum``, what a shell reports for the signal.
    """

    def __init__(
        self, signum: int, step: int, directory: pathlib.Path, *, start: int | None = None
    ):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}: checkpoint {directory / str(step)} is saved; "
            "rerun the same command to resume from it"
        )
        self.signum = signum
        self.step = step
        self.start = step if start is None else start
        self.exit_code = 128 + signum


class _StopSignals:
    """While inside, SIGTERM and SIGINT set ``signum`` instead of stopping the process, so
    :func:`~vae_xai.train.fit` can save the current step first (a preemption notice from
    Colab, TPU VMs or SLURM is a SIGTERM). A second signal of either kind stops at once (the
    previous handlers are back). Only the main thread can install handlers; elsewhere this
    does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.signum is not None:  # the second one: stop now
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        logging.warning(
            "%s received: saving the current step, then stopping", signal.Signals(signum).name
        )

    def _restore(self) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old)
        self._old = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._old[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._restore()
