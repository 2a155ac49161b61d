"""The error every refused workdir start raises (:class:`WorkdirError`)."""

from __future__ import annotations

__all__ = ["WorkdirError"]


class WorkdirError(ValueError):
    """A start that would mix two runs in one workdir (or mislabel its results)."""
