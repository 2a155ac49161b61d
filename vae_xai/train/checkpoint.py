"""Checkpoints of a :class:`~vae_xai.train.TrainState`: the orbax manager, checksums, and a
verified restore.

Every step folder that :func:`~vae_xai.train.fit` saves gets a checksum file once its save is
complete; a restore checks those checksums, reads the whole step and checks it is finite, so
a damaged step is named in one line (:class:`CheckpointError`) and never used. The training
loop falls back to the newest intact step (moving damaged ones aside, never deleting them);
:func:`restore_params` (evaluation of a given step) does not.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import pathlib
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from vae_xai import distributed
from vae_xai.sharding import make_mesh, replicated
from vae_xai.train.state import TrainState, _all_finite
from vae_xai.workdir import CHECKSUMS_FILE, write_json_atomic


class _QuietOrbax(logging.Filter):
    """Drop orbax's per-save INFO lines (they drown the progress bar); keep its warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "orbax" not in record.pathname


_QUIET_ORBAX = _QuietOrbax()


def checkpoint_manager(
    workdir: str | pathlib.Path, *, max_to_keep: int = 2, keep_every: int | None = None
) -> ocp.CheckpointManager:
    """An orbax manager for ``workdir/checkpoints`` (created if missing).

    Args:
      workdir: the run folder.
      max_to_keep: how many of the latest checkpoints are kept.
      keep_every: also keep, forever, every checkpoint whose step is a multiple of this
        (orbax's ``keep_period``), e.g. for scores along training; ``None``: only the latest.

    Returns:
      The ``ocp.CheckpointManager`` (one unnamed item, saved with the standard handler).
    """
    absl_logger = logging.getLogger("absl")
    if _QUIET_ORBAX not in absl_logger.filters:
        absl_logger.addFilter(_QUIET_ORBAX)
    directory = pathlib.Path(workdir).absolute() / "checkpoints"
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, keep_period=keep_every or None, create=True
    )
    # one unnamed item, declared: orbax otherwise infers single vs. several items from the
    # first step it reads, so one emptied step folder would make every other step unreadable
    return ocp.CheckpointManager(
        directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
    )


def _abstract(state: TrainState, mesh: Mesh) -> Any:
    rep = replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), state)


# Where fit moves a damaged step (never deleted: the bytes stay for inspection).
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used (damaged, unreadable, or not saved).

    The message is one line naming the step folder and what to do.
    """


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_checksums(step_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Record the size and sha256 of every file of a finished step folder.

    Written atomically to ``step_dir/CHECKSUMS_FILE``, for :func:`verify_checkpoint`.

    Args:
      step_dir: an orbax step folder (``workdir/checkpoints/<step>``) whose save has finished.

    Returns:
      The checksum file's path.
    """
    step_dir = pathlib.Path(step_dir)
    files = {
        p.relative_to(step_dir).as_posix(): [p.stat().st_size, _sha256(p)]
        for p in sorted(step_dir.rglob("*"))
        if p.is_file() and p.name != CHECKSUMS_FILE and not p.name.startswith(f".{CHECKSUMS_FILE}")
    }
    return write_json_atomic(step_dir / CHECKSUMS_FILE, {"step_dir": step_dir.name, "files": files})


def verify_checkpoint(step_dir: str | os.PathLike[str]) -> str | None:
    """Say why the files of a step folder differ from the checksums written with them.

    A step without a checksum file passes here; it is then checked by the full read and the
    finiteness check of the restore only.

    Args:
      step_dir: an orbax step folder (``workdir/checkpoints/<step>``).

    Returns:
      ``None`` when the files match (or there is no checksum file), else a short reason
      naming the first differing file.
    """
    step_dir = pathlib.Path(step_dir)
    if not step_dir.is_dir():
        return "the folder is missing"
    path = step_dir / CHECKSUMS_FILE
    if not path.exists():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {CHECKSUMS_FILE} cannot be read ({type(err).__name__})"
    for rel, (size, digest) in sorted(files.items()):
        p = step_dir / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != size:
            return f"{rel} holds {p.stat().st_size} bytes, {size} were saved"
        if _sha256(p) != digest:
            return f"{rel} differs from the checksum saved with it"
    return None


@contextlib.contextmanager
def _orbax_silent():
    """Drop orbax's and tensorstore's log lines while a step is tried: a damaged step is
    reported in one line by the caller, not in the 60-160 lines orbax logs."""
    absl_logger = logging.getLogger("absl")

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "orbax" not in record.pathname and "tensorstore" not in record.pathname

    drop = _Drop()
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(err).__name__}: {line[:160]}"


def _restore_checked(
    manager: ocp.CheckpointManager, step: int, abstract: Any
) -> tuple[Any, str | None]:
    """``(state, None)`` for an intact step, ``(None, reason)`` for a damaged one: its files
    differ from their checksums, orbax cannot read all of it, or it holds a non-finite value
    (never saved by :func:`~vae_xai.train.fit`, so the bytes changed)."""
    step_dir = pathlib.Path(manager.directory) / str(step)
    reason = verify_checkpoint(step_dir)
    if reason is not None:
        return None, reason
    try:
        with _orbax_silent():
            restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
            restored = jax.block_until_ready(restored)
    except Exception as err:  # noqa: BLE001 (orbax/tensorstore raise many types)
        return None, f"it cannot be read ({_first_line(err)})"
    if not bool(jax.device_get(_all_finite(restored))):
        return None, "it holds non-finite values"
    return restored, None


def restore_params(
    workdir: str | pathlib.Path,
    state: TrainState,
    *,
    mesh: Mesh | None = None,
    step: int | None = None,
):
    """Restore a checkpoint of ``workdir`` into the structure of ``state``, verified before use.

    The checkpoint is checked (checksums, a full read, finite values) before it is returned.
    There is no fallback to another step here, since an evaluation of another step than asked
    would be mislabelled (:func:`~vae_xai.train.fit` does fall back).

    Args:
      workdir: the run folder.
      state: a :class:`~vae_xai.train.TrainState` with the structure, shapes and dtypes to
        restore into (e.g. a freshly initialized one).
      mesh: device mesh to restore onto (default: all devices on ``"data"``).
      step: the step to restore; ``None``: the latest.

    Returns:
      The restored state; with several processes, this process's copy
      (:func:`vae_xai.distributed.local_copy`).

    Raises:
      FileNotFoundError: no checkpoint (or none of ``step``), naming the folder.
      TypeError: ``step`` is not an integer.
      CheckpointError: the checkpoint is damaged (one line naming the step folder to delete).
    """
    mesh = mesh or make_mesh()
    if not (pathlib.Path(workdir) / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"no checkpoint found under {pathlib.Path(workdir) / 'checkpoints'}"
        )
    if step is not None and (isinstance(step, bool) or not isinstance(step, int | np.integer)):
        raise TypeError(f"step must be an integer; got {step!r}")
    with checkpoint_manager(workdir) as manager:  # (a manager deletes only when it saves)
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint found under {pathlib.Path(workdir) / 'checkpoints'}"
                )
        elif step not in manager.all_steps():
            raise FileNotFoundError(
                f"no checkpoint of step {step} under {pathlib.Path(workdir) / 'checkpoints'} "
                f"(it holds steps {sorted(manager.all_steps())})"
            )
        restored, reason = _restore_checked(manager, int(step), _abstract(state, mesh))
        if reason is not None:
            step_dir = pathlib.Path(manager.directory) / str(step)
            raise CheckpointError(
                f"checkpoint {step_dir} is damaged: {reason}; delete that folder and rerun the "
                "training command (it resumes from the newest intact step)"
            )
    return distributed.local_copy(restored)


def _restore_latest_intact(
    manager: ocp.CheckpointManager, abstract: Any, workdir: pathlib.Path, primary: bool
) -> tuple[Any, int | None]:
    """The newest intact step of ``manager`` restored, and its step (``(None, None)`` when
    there are no steps). Damaged steps newer than it are moved (never deleted) to
    ``workdir/DAMAGED_DIR/<step>``, each with a warning naming both paths; kept steps
    (``keep_every``) and older steps are untouched. With no intact step at all nothing is
    moved and :class:`CheckpointError` names the steps."""
    damaged: list[tuple[int, str]] = []
    for step in sorted(manager.all_steps(), reverse=True):
        restored, reason = _restore_checked(manager, step, abstract)
        if reason is None:
            break
        damaged.append((step, reason))
    else:
        if not damaged:
            return None, None
        listing = "; ".join(f"{pathlib.Path(manager.directory) / str(s)}: {r}" for s, r in damaged)
        raise CheckpointError(
            f"no intact checkpoint under {manager.directory} ({listing}); nothing was moved or "
            "deleted: delete those step folders to train from step 0, or use another --workdir"
        )
    if damaged and primary:
        target = workdir / DAMAGED_DIR
        target.mkdir(parents=True, exist_ok=True)
        for s, r in damaged:
            src = pathlib.Path(manager.directory) / str(s)
            dst = target / f"{s}_{time.strftime('%Y%m%dT%H%M%S')}"
            shutil.move(str(src), str(dst))
            logging.warning(
                "checkpoint %s is damaged (%s): moved to %s; resuming from step %d",
                src,
                r,
                dst,
                step,
            )
        manager.reload()
    return restored, step


def _save_error(
    err: BaseException, manager: ocp.CheckpointManager, step: int, saved: int | None
) -> BaseException:
    """A one-line :class:`CheckpointError` for a failed save (a full disk, a read-only or
    vanished folder); any other error is returned as is."""
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    os_err = next((e for e in chain if isinstance(e, OSError) and e.errno), None)
    text = " ".join(str(e) for e in chain)
    # tensorstore reports a failed write as a ValueError whose text holds the OS's reason
    known = [os.strerror(n) for n in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)]
    found = next((r for r in known if r in text), None)
    if os_err is None and found is None:
        return err
    reason = os.strerror(os_err.errno) if os_err is not None else found
    where = (
        f"a rerun resumes from step {saved} ({pathlib.Path(manager.directory) / str(saved)})"
        if saved is not None
        else "no step was saved before it"
    )
    return CheckpointError(
        f"saving step {step} to {pathlib.Path(manager.directory) / str(step)} failed: {reason}; "
        f"fix that (e.g. free disk space) and rerun the same command: {where}"
    )
