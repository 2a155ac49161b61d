"""What a workdir's record reads of its checkpoints: the highest step saved (folder names,
:func:`trained_step`) and a step's checksums (:func:`checkpoint_digest`), never the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

__all__ = ["CHECKSUMS_FILE", "checkpoint_digest", "trained_step"]

# Written by vae_xai.train into each checkpoint step folder once its save is complete: the
# size and sha256 of every file orbax wrote, so a restore can tell a damaged step from an
# intact one, and an evaluation can tell two checkpoints of one step apart.
CHECKSUMS_FILE = "vae_xai_checksums.json"


def checkpoint_digest(step_dir: str | os.PathLike[str]) -> str | None:
    """A short hash of a checkpoint step's checksum file, so of the exact files saved.

    Args:
      step_dir: the step folder (``workdir/checkpoints/<step>``).

    Returns:
      10 hex digits, or ``None`` when the step has no readable checksum file (saved without
      checksums, or not saved).
    """
    path = pathlib.Path(step_dir) / CHECKSUMS_FILE
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:10]


def trained_step(workdir: str | os.PathLike[str]) -> int | None:
    """The highest checkpointed step under ``workdir/checkpoints`` or ``workdir/*/checkpoints``.

    Reads folder names only (orbax names step folders by their step; unfinished saves carry a
    suffix and are skipped), so it costs nothing.

    Args:
      workdir: the run folder.

    Returns:
      The step, or ``None`` when nothing is checkpointed.
    """
    workdir = pathlib.Path(workdir)
    steps = [
        int(p.name)
        for folder in [workdir / "checkpoints", *workdir.glob("*/checkpoints")]
        if folder.is_dir()
        for p in folder.iterdir()
        if p.is_dir() and p.name.isdigit()
    ]
    return max(steps) if steps else None
