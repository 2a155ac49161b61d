"""One writer per workdir: an exclusive ``flock`` on ``workdir/.lock`` (:func:`lock`).

The lock file records the holder's host, PID and start time, so a refused start can say who
holds the workdir. The kernel drops a ``flock`` when its process dies, so a killed run's lock
is taken over by the next start (logged); a process that ends normally marks its locks
released (:func:`release`).
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import pathlib
import socket
from typing import Any

import jax

from vae_xai.provenance import now as _now
from vae_xai.workdir.errors import WorkdirError

__all__ = ["LOCK_FILE", "lock", "release"]

# One writer per workdir: the process that holds an exclusive flock on this file (its host,
# PID and start time are written into it).
LOCK_FILE = ".lock"

# workdir (resolved) -> open file descriptor holding its flock, for this process's lifetime
_HELD: dict[str, int] = {}
_AT_EXIT: list[Any] = []


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock(workdir: str | os.PathLike[str]) -> pathlib.Path:
    """Make this process the one writer of ``workdir`` until it exits (or :func:`release`).

    An exclusive ``flock`` on ``workdir/.lock``, which records the holder's host, PID and
    start time. The kernel drops the lock when its process dies, so the lock of a killed run
    is stale by construction: it is taken over (and logged with the dead holder's PID). Taking
    it again in the same process is a no-op (a notebook may start a run twice). With several
    processes (:mod:`vae_xai.distributed`) only process 0 locks.

    Args:
      workdir: the run folder (created if missing).

    Returns:
      The lock file's path.

    Raises:
      WorkdirError: another process holds the lock (names its host and PID), or the folder
        cannot be written.
    """
    workdir = pathlib.Path(workdir)
    path = workdir / LOCK_FILE
    if jax.process_count() > 1 and jax.process_index() != 0:
        return path
    key = str(workdir.resolve())
    if key in _HELD:
        return path
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:  # read-only, not a folder, no permission
        raise WorkdirError(
            f"{workdir} cannot be used as a workdir: {err.strerror or err} "
            f"({err.filename or path}); a run writes its checkpoints and results there: use a "
            "writable --workdir (a copy of this one continues the run)"
        ) from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 4096).decode(errors="replace").strip()
        os.close(fd)
        try:
            info = json.loads(holder)
            who = f"PID {info['pid']} on host {info['host']} since {info['time']}"
        except (ValueError, KeyError, TypeError):
            who = "another process"
        raise WorkdirError(
            f"{workdir} is in use by {who} ({path}): one run writes a workdir at a time; wait "
            "for it to end, or use another --workdir"
        ) from None
    previous = os.read(fd, 4096).decode(errors="replace").strip()
    if previous:
        try:
            info = json.loads(previous)
            if info.get("pid") is not None and "released" not in info:
                logging.warning(
                    "%s: taking over the lock left by PID %s on host %s (%s)",
                    workdir,
                    info.get("pid"),
                    info.get("host"),
                    "no longer running"
                    if info.get("host") == socket.gethostname() and not _pid_running(info["pid"])
                    else "its lock was released",
                )
        except (ValueError, TypeError):
            pass
    record = {"host": socket.gethostname(), "pid": os.getpid(), "time": _now()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    if not _AT_EXIT:  # a process that ends normally marks its locks released (no takeover noise)
        _AT_EXIT.append(atexit.register(_release_all))
    _HELD[key] = fd
    return path


def _release_all() -> None:
    for key in list(_HELD):
        try:
            release(key)
        except OSError:
            pass


def release(workdir: str | os.PathLike[str]) -> None:
    """Release this process's lock on ``workdir`` (a no-op when it holds none).

    The lock file stays (marked released): removing it could let two later starts lock two
    files.

    Args:
      workdir: the run folder.
    """
    fd = _HELD.pop(str(pathlib.Path(workdir).resolve()), None)
    if fd is None:
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps({"released": _now()}) + "\n").encode(), 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
