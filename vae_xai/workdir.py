"""A workdir is one run: its identity is recorded on first start and checked on every later one.

Every launcher in ``experiments/`` calls :func:`start` after validating its config and before
any work (no data loading, model init or compilation):

* **First start** writes ``workdir/run.json`` (atomically): the experiment name, the resolved
  config, the data identity (dataset, category, a fingerprint of the data files; see
  :func:`fingerprint_files`, or for rendered dSprites
  :func:`vae_xai.experiments.dsprites_renderer.renderer_identity`), the package versions, the git
  commit (``None`` outside a git checkout) and the device.
* **Every later start** compares the new config and data identity with the record. A
  difference in a field that changes what is trained is refused with a :class:`WorkdirError`
  naming the workdir and every differing field with its old and new value. Which fields may
  differ is declared once per config module as a :class:`Fields` (``FIELDS``): the
  evaluation-only subtrees (e.g. ``eval``), the checkpoint/log periods, and ``num_steps``.
* ``num_steps`` may grow (the run continues; the start is recorded in ``run.json``'s
  ``starts``). A ``num_steps`` below the step already trained is refused: the checkpoints of
  the earlier steps are pruned by orbax, so evaluating "at" the smaller step would evaluate
  the longer-trained model under the smaller step's label.
* **Evaluations** (:meth:`Run.evaluation`) each get their own folder
  ``workdir/evaluations/step<N>_<hash of the evaluation config>/`` with their
  ``results.json`` and figures, so an evaluation with another evaluation config never
  replaces an earlier one. The newest evaluation's outputs are linked from the workdir
  (``workdir/results.json``, ``workdir/figures``, ... are symlinks into its folder) and every
  evaluation is listed in ``run.json``'s ``evaluations``. Each evaluation folder also holds a
  TensorBoard event file with its numbers and figures (:mod:`vae_xai.metric_writer`).

A workdir that holds outputs but no ``run.json`` (made before run records, or by something
else) is refused: its config cannot be checked.
"""

from __future__ import annotations

import atexit
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import pathlib
import shutil
import socket
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import jax

from vae_xai import distributed
from vae_xai import results as results_lib
from vae_xai.metric_writer import MetricWriter, flatten_numbers
from vae_xai.provenance import device as _device
from vae_xai.provenance import git_commit as _git_commit
from vae_xai.provenance import now as _now
from vae_xai.provenance import provenance, write_json_atomic
from vae_xai.provenance import versions as _versions
from vae_xai.validation import ConfigError

__all__ = [
    "CHECKSUMS_FILE",
    "LOCK_FILE",
    "RUN_FILE",
    "SEEDS_FILE",
    "Evaluation",
    "Fields",
    "Run",
    "StateFileError",
    "WorkdirError",
    "check",
    "changed_files",
    "check_values",
    "checkpoint_digest",
    "lock",
    "config_dict",
    "copied_outputs",
    "fingerprint_files",
    "flatten",
    "open_trained",
    "provenance",
    "read_state_json",
    "release",
    "replace_link",
    "split_listings",
    "start",
    "trained_step",
    "write_json_atomic",
]

RUN_FILE = "run.json"
# The record of a workdir whose seeds are runs of their own (workdir/seed_N; vae_xai.seeds).
SEEDS_FILE = "seeds.json"
EVALUATIONS = "evaluations"
# Above this many bytes the data fingerprint uses (size, mtime) instead of content hashes.
CONTENT_HASH_LIMIT = 2 << 30
_MISSING = "<absent>"
_EVENTS = "events.out.tfevents"
# One writer per workdir: the process that holds an exclusive flock on this file (its host,
# PID and start time are written into it).
LOCK_FILE = ".lock"
# Written by vae_xai.train into each checkpoint step folder once its save is complete: the
# size and sha256 of every file orbax wrote, so a restore can tell a damaged step from an
# intact one, and an evaluation can tell two checkpoints of one step apart.
CHECKSUMS_FILE = "vae_xai_checksums.json"
# What jax.random.key holds of a seed: 32 bits (key(2**32) is key(0)).
SEED_LIMIT = 2**32


class WorkdirError(ValueError):
    """A start that would mix two runs in one workdir (or mislabel its results)."""


class StateFileError(WorkdirError):
    """A workdir's state file (``run.json``, ``seeds.json``, ...) cannot be read; the message
    names the file and what to do."""


def read_state_json(path: str | os.PathLike[str], *, fix: str) -> Any:
    """The JSON content of a workdir state file.

    Args:
      path: the file (it must exist).
      fix: what the user should do when it cannot be read (appended to the message).

    Raises:
      StateFileError: the file cannot be read or is not valid JSON (e.g. cut by a full disk
        or a kill outside :func:`write_json_atomic`); names the file, the reason and ``fix``.
    """
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise StateFileError(
            f"{path} cannot be read ({reason}){': ' + fix if fix else ''}"
        ) from err


# ----------------------------------------------------------------------------- the lock

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
    """Make this process the one writer of ``workdir`` (created if missing) until it exits
    (or :func:`release`).

    An exclusive ``flock`` on ``workdir/.lock``, which records the holder's host, PID and
    start time. The kernel drops the lock when its process dies, so the lock of a killed run
    is stale by construction: it is taken over (and logged with the dead holder's PID). Taking
    it again in the same process is a no-op (a notebook may start a run twice). With several
    processes (:mod:`vae_xai.distributed`) only process 0 locks.

    Returns:
      The lock file's path.

    Raises:
      WorkdirError: another process holds the lock; names its host and PID.
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
    """Release this process's lock on ``workdir`` (a no-op when it holds none). The lock file
    stays (marked released): removing it could let two later starts lock two files."""
    fd = _HELD.pop(str(pathlib.Path(workdir).resolve()), None)
    if fd is None:
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps({"released": _now()}) + "\n").encode(), 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def check_values(config: Any) -> None:
    """Every float of the config is finite and a ``seed`` is an integer the random key holds
    (seeds equal modulo 2**32 would train the same run twice).

    Args:
      config: a ConfigDict or mapping.

    Raises:
      ConfigError: names the first offending field.
    """
    for key, value in flatten(config_dict(config)).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(key, f"must be finite; got {value!r}")
    flat = flatten(config_dict(config))
    if "seed" in flat and flat["seed"] is not None:
        seed = flat["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            raise ConfigError("seed", f"must be an integer in [0, 2**32); got {seed!r}")


@dataclasses.dataclass(frozen=True)
class Fields:
    """Which config fields may differ between the starts of one workdir.

    Attributes:
      num_steps: dotted path of the total step count; it may grow, never fall below the step
        already trained.
      eval: dotted paths (a subtree or a leaf) that only change evaluation; each evaluation
        is recorded with their values.
      schedule: dotted paths that change neither the trained model nor the evaluation (how
        often to checkpoint and log, where to cache decoded data); recorded when they change.
      labels: dotted paths that only name a set of other fields' values (the config
        ``variant``); recorded when they change, never compared: the fields they stand for
        are. So a workdir started as ``mvtec_localization.py:small`` continues under the
        variant's canonical name ``cpu`` (same fields), and ``:smoke`` -> ``:cpu`` on one
        workdir is refused by the fields that differ (batch size, ...), not by the name.
    """

    num_steps: str = "num_steps"
    eval: tuple[str, ...] = ("eval",)
    schedule: tuple[str, ...] = ("checkpoint_every", "log_every")
    labels: tuple[str, ...] = ("variant",)

    def kind(self, key: str) -> str:
        """``"num_steps"``, ``"eval"``, ``"schedule"``, ``"label"`` or ``"train"`` for a
        dotted key."""
        if key == self.num_steps:
            return "num_steps"
        for name, prefixes in (
            ("eval", self.eval),
            ("schedule", self.schedule),
            ("label", self.labels),
        ):
            if any(key == p or key.startswith(p + ".") for p in prefixes):
                return name
        return "train"


# ----------------------------------------------------------------------------- helpers


def _same_tree(a: pathlib.Path, b: pathlib.Path) -> bool:
    """``a`` (a real file or folder) holds exactly the bytes of ``b``."""
    if a.is_file():
        return (
            b.is_file()
            and a.stat().st_size == b.stat().st_size
            and a.read_bytes() == b.read_bytes()
        )
    if not (a.is_dir() and b.is_dir()):
        return False
    names_a = sorted(p.relative_to(a) for p in a.rglob("*"))
    names_b = sorted(p.relative_to(b) for p in b.rglob("*"))
    return names_a == names_b and all(
        _same_tree(a / n, b / n) for n in names_a if (a / n).is_file()
    )


def copied_outputs(workdir: str | os.PathLike[str]) -> set[str]:
    """The names of the real files and folders at the top of ``workdir`` that are copies of
    some evaluation's output (``workdir/evaluations/*/<name>``): links that a ``cp -rL``
    turned into copies. Taken before an evaluation writes, since a rerun of the same
    evaluation rewrites the very output the copy was made of."""
    workdir = pathlib.Path(workdir)
    outputs = workdir / EVALUATIONS
    if not workdir.is_dir() or not outputs.is_dir():
        return set()
    return {
        p.name
        for p in workdir.iterdir()
        if not p.is_symlink()
        and p.name != EVALUATIONS
        and not p.name.startswith(".")
        and any(_same_tree(p, q) for q in outputs.glob(f"*/{p.name}"))
    }


def replace_link(
    link: pathlib.Path,
    target: str,
    outputs: pathlib.Path,
    *,
    copies: Collection[str] = (),
) -> bool:
    """Point ``link`` at ``target`` (relative to the link's folder), atomically.

    A symlink is replaced. A real file or folder there (a workdir copied with ``cp -rL``
    turns the links into copies) is replaced when its name is in ``copies`` (found by
    :func:`copied_outputs` before the evaluation wrote) or it is a copy of some output under
    ``outputs`` (any evaluation's file of that name); anything else is a user's own file:
    left alone, with a warning. Returns whether the link now points at ``target``.
    """
    if link.exists() and not link.is_symlink() and link.name not in copies:
        found = [p for p in outputs.glob(f"*/{link.name}") if _same_tree(link, p)]
        if not found:
            logging.warning(
                "%s is a file of its own (not a copy of an evaluation's output): left alone; "
                "the newest is %s",
                link,
                link.parent / target,
            )
            return False
    if link.is_dir() and not link.is_symlink():
        aside = link.with_name(f".{link.name}.replaced-{os.getpid()}")
        os.replace(link, aside)
        shutil.rmtree(aside)
    tmp = link.with_name(f".{link.name}.link-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return True


def config_dict(config: Any) -> dict[str, Any]:
    """A ConfigDict (or mapping) as plain JSON values (tuples become lists)."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(raw, default=str))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _select(tree: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    flat = flatten(tree)
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in paths)}


def _short_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _walk_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every visible file under ``root``, following symlinked folders and files (a data
    folder of links is read through them), each real folder once (no link cycles)."""
    out: list[pathlib.Path] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = pathlib.Path(folder) / name
            if not name.startswith(".") and path.is_file():
                out.append(path)
    return sorted(out)


# the key of a fingerprint's per-file table: stored in workdir/data_files.json, not run.json
LISTING = "_listing"
DATA_FILES = "data_files.json"


def fingerprint_files(
    root: str | os.PathLike[str],
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    suffixes: Collection[str] | None = None,
    ignore: Collection[str] = (),
    content_limit: int = CONTENT_HASH_LIMIT,
) -> dict[str, Any]:
    """A fingerprint of the data files under ``root`` (or of ``files``, paths under it).

    ``sha256`` over the sorted relative paths with each file's size and content hash, so a
    copy of the same data elsewhere has the same fingerprint and any added, removed or
    changed file gives another. When the files hold more than ``content_limit`` bytes the
    file's modification time (ns) replaces its content hash (``"mode": "stat"``): hashing
    would no longer take seconds. Hidden files (``.name``) are skipped; symlinked folders
    and files are followed (the loader reads through them).

    Args:
      root: the data folder.
      files: exactly the files the loader reads (else every file under ``root``).
      suffixes: only files with one of these suffixes (case-insensitive, e.g. the image
        extensions a loader accepts), so files it never reads (``Thumbs.db``, notes) are
        not part of the identity.
      ignore: file names (case-insensitive) the loader skips.
      content_limit: see above.

    Returns:
      ``{"sha256", "num_files", "bytes", "mode", "_listing"}``; ``_listing`` (each file's
      token) is kept by :func:`start` in ``workdir/data_files.json`` to name the files that
      changed when a later start's data differ, and is not compared itself.
    """
    root = pathlib.Path(root)
    if files is None:
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {root} does not exist")
        paths = _walk_files(root)
    else:
        paths = sorted(pathlib.Path(f) for f in files)
    if suffixes is not None:
        allowed = {x.lower() for x in suffixes}
        paths = [p for p in paths if p.suffix.lower() in allowed]
    skipped = {x.lower() for x in ignore}
    paths = [p for p in paths if p.name.lower() not in skipped]
    stats = [(p, p.stat()) for p in paths]
    total = sum(s.st_size for _, s in stats)
    mode = "content" if total <= content_limit else "stat"
    digest = hashlib.sha256()
    listing: dict[str, str] = {}
    for p, st in stats:
        rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
        if mode == "content":
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            token = h.hexdigest()
        else:
            token = str(st.st_mtime_ns)
        digest.update(f"{rel}\0{st.st_size}\0{token}\n".encode())
        listing[rel] = f"{st.st_size}:{token[:16]}"
    return {
        "sha256": digest.hexdigest(),
        "num_files": len(stats),
        "bytes": total,
        "mode": mode,
        LISTING: listing,
    }


def split_listings(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` without the fingerprints' per-file tables, and those tables by dotted key."""
    tables: dict[str, Any] = {}

    def strip(tree: Any, prefix: str) -> Any:
        if not isinstance(tree, Mapping):
            return tree
        out = {}
        for k, v in tree.items():
            if k == LISTING:
                tables[prefix.rstrip(".")] = v
            else:
                out[k] = strip(v, f"{prefix}{k}.")
        return out

    return strip(data, ""), tables


def changed_files(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``added X``, ``removed X``, ``changed X`` lines between two per-file tables (by the
    dotted key of their fingerprint), at most 20."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key) or {}, new.get(key) or {}
        where = f"{key}: " if key else ""
        for rel in sorted(set(a) | set(b)):
            if rel not in a:
                lines.append(f"{where}added {rel}")
            elif rel not in b:
                lines.append(f"{where}removed {rel}")
            elif a[rel] != b[rel]:
                lines.append(f"{where}changed {rel}")
    return lines[:20] + ([f"... {len(lines) - 20} more"] if len(lines) > 20 else [])


def checkpoint_digest(step_dir: str | os.PathLike[str]) -> str | None:
    """A short hash of a checkpoint step's checksum file (so of the exact files saved), or
    ``None`` when the step has none (saved by an older version, or not saved).

    Args:
      step_dir: the step folder (``workdir/checkpoints/<step>``).
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
    suffix and are skipped), so it costs nothing. ``None`` when nothing is checkpointed.
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


# ----------------------------------------------------------------------------- the run


def _diff_lines(diffs: Sequence[tuple[str, Any, Any]]) -> str:
    return "\n".join(
        f"  {k}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
        for k, old, new in diffs
    )


class Run:
    """A started run: its workdir, record (``run.json``) and declared fields."""

    def __init__(self, workdir: pathlib.Path, record: dict[str, Any], fields: Fields):
        self.workdir = workdir
        self.record = record
        self.fields = fields
        # copies of outputs at the top of the workdir (cp -rL), taken before any evaluation
        # of this start writes (see copied_outputs)
        self.copies: set[str] | None = None

    @property
    def path(self) -> pathlib.Path:
        return self.workdir / RUN_FILE

    def _write(self) -> None:
        write_json_atomic(self.path, self.record)

    def summary(self) -> dict[str, Any]:
        """What a results file should say about the run (identity, not the evaluation)."""
        r = self.record
        return {
            "workdir": str(self.workdir),
            "experiment": r["experiment"],
            "data": r["data"],
            "created": r["created"],
            "git": r["git"],
            "versions": r["versions"],
            "device": r["device"],
            "starts": len(r["starts"]),
        }

    def eval_config(self, config: Any) -> dict[str, Any]:
        """The evaluation-only fields of ``config`` (flattened), as declared in ``Fields``."""
        return _select(config_dict(config), self.fields.eval)

    def evaluation(
        self, eval_config: Mapping[str, Any], *, step: int, label: str = "step"
    ) -> Evaluation:
        """The folder of the evaluation of the model at ``step`` with ``eval_config``.

        ``eval_config`` is whatever changes the evaluation's outputs (e.g.
        :meth:`eval_config` plus the images it is scored on). The same model and
        configuration give the same folder (redoing it replaces identical outputs); any other
        gives a new one.
        """
        if isinstance(step, bool) or not isinstance(step, int) and not hasattr(step, "__index__"):
            raise TypeError(f"step must be an integer; got {step!r}")
        step = int(step)
        if self.copies is None and jax.process_index() == 0:
            self.copies = copied_outputs(self.workdir)
        eval_config = json.loads(json.dumps(dict(eval_config), default=str))
        digest = checkpoint_digest(self.workdir / "checkpoints" / str(step))
        # another checkpoint of this step (retrained after a damaged one was moved aside, say)
        # gets another folder: an evaluation never replaces one of a different checkpoint
        key = eval_config if digest is None else {**eval_config, "checkpoint": digest}
        name = f"{label}{step}_{_short_hash(key)}"
        return Evaluation(self, self.workdir / EVALUATIONS / name, eval_config, step, digest)


class Evaluation:
    """One evaluation of a run: its own folder, config and results."""

    def __init__(
        self,
        run: Run,
        folder: pathlib.Path,
        config: dict[str, Any],
        step: int,
        checkpoint: str | None = None,
    ):
        self.run = run
        self.dir = folder
        self.config = config
        self.step = step
        self.checkpoint = checkpoint
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def results_path(self) -> pathlib.Path:
        return self.dir / "results.json"

    def header(self) -> dict[str, Any]:
        """The ``run`` and ``evaluation`` entries a results file carries."""
        return {
            "run": self.run.summary(),
            "evaluation": {
                "dir": str(self.dir),
                "step": self.step,
                "checkpoint": self.checkpoint,
                "config": self.config,
                "time": _now(),
                "git": _git_commit(),
            },
        }

    def save_results(
        self,
        results: Mapping[str, Any] | None = None,
        *,
        per_seed: Mapping[Any, Mapping[str, Any]] | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Write ``results.json`` in the evaluation folder through the results schema
        (:func:`vae_xai.results.write`, atomically), record the evaluation in ``run.json``
        and, with ``publish``, link its outputs from the workdir.

        ``results`` are one seed's numbers (``seed`` defaults to the config's ``seed``, else
        0); a run that trains several seeds itself passes ``per_seed`` instead. The schema's
        ``config`` and ``data`` are the run record's; ``extra`` (e.g. ``paper``, ``notes``)
        follows the :meth:`header` entries. Returns what was written, with ``results_path``.
        """
        if (results is None) == (per_seed is None):
            raise ValueError("pass one of results (one seed) and per_seed")
        record = self.run.record
        config = record.get("last_config", record["config"])
        if per_seed is None:
            if seed is None:
                seed = flatten(config).get("seed", 0)
            per_seed = {str(seed): results}
        written = results_lib.write(
            self.results_path,
            experiment=record["experiment"],
            config=config,
            data=record["data"],
            per_seed=per_seed,
            extra={**self.header(), **dict(extra or {})},
        )
        entries = written["per_seed"]
        self._write_events(next(iter(entries.values())) if len(entries) == 1 else entries)
        entry = {"dir": self.dir.name, "step": self.step, "time": _now()}
        evals = [e for e in self.run.record.get("evaluations", []) if e["dir"] != self.dir.name]
        self.run.record["evaluations"] = [*evals, entry]
        self.run._write()
        if publish:
            self.publish()
        if jax.process_count() > 1:  # the others wait until process 0 has written
            distributed.sync(f"save_results:{self.dir.name}")
        return written

    def _write_events(self, results: Mapping[str, Any]) -> None:
        """This evaluation's TensorBoard run: every number of ``results`` and every PNG in
        its folder at its step (the event file is rewritten with each save)."""
        if jax.process_index() != 0:  # process 0 writes (vae_xai.distributed)
            return
        for old in self.dir.glob(f"{_EVENTS}*"):
            old.unlink()
        with MetricWriter(self.dir) as writer:
            writer.write_scalars(
                self.step, flatten_numbers(json.loads(json.dumps(results, default=str)))
            )
            for png in sorted(self.dir.rglob("*.png")):
                data = png.read_bytes()
                if data.startswith(b"\x89PNG"):  # a figure that is not a PNG is left out
                    writer.write_images(self.step, {png.relative_to(self.dir).as_posix(): data})

    def publish(self) -> list[pathlib.Path]:
        """Point ``workdir/<name>`` at every output of this evaluation (symlinks, replaced
        atomically); links of an earlier evaluation that this one lacks are removed. A real
        file or folder of that name in the workdir is left alone. With several processes,
        process 0 links; the others return ``[]``."""
        if jax.process_index() != 0:
            return []
        workdir = self.run.workdir
        names = {
            p.name
            for p in self.dir.iterdir()
            if not p.name.startswith(".") and not p.name.startswith(_EVENTS)
        }
        for link in workdir.iterdir():
            if link.is_symlink() and os.readlink(link).startswith(EVALUATIONS + os.sep):
                if link.name not in names:
                    link.unlink()
        made = []
        for name in sorted(names):
            target = os.path.join(EVALUATIONS, self.dir.name, name)
            copies = self.run.copies or ()
            if replace_link(workdir / name, target, workdir / EVALUATIONS, copies=copies):
                made.append(workdir / name)
        return made


def _check(
    workdir: pathlib.Path,
    record: Mapping[str, Any],
    experiment: str,
    fields: Fields,
    flat_new: Mapping[str, Any],
    new_data: Mapping[str, Any],
    num_steps: int,
    step_done: int | None,
    tables: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`WorkdirError` unless the start may continue the recorded run; with the
    new data's per-file ``tables`` (:func:`split_listings`), a data change names the files."""
    if record.get("experiment") != experiment:
        raise WorkdirError(
            f"{workdir} holds a {record.get('experiment')!r} run; this is {experiment!r}. "
            "Use another --workdir."
        )
    flat_old = flatten(record["config"])
    diffs = [
        (k, flat_old.get(k, _MISSING), flat_new.get(k, _MISSING))
        for k in sorted(set(flat_old) | set(flat_new))
        if fields.kind(k) == "train" and flat_old.get(k, _MISSING) != flat_new.get(k, _MISSING)
    ]
    flat_data_old, flat_data_new = flatten(record["data"]), flatten(new_data)
    diffs += [
        (f"data.{k}", flat_data_old.get(k, _MISSING), flat_data_new.get(k, _MISSING))
        for k in sorted(set(flat_data_old) | set(flat_data_new))
        if flat_data_old.get(k, _MISSING) != flat_data_new.get(k, _MISSING)
    ]
    if diffs:
        files = ""
        if tables and any(k.startswith("data.") for k, _, _ in diffs):
            try:
                old_tables = json.loads((workdir / DATA_FILES).read_text())
            except (OSError, ValueError):
                old_tables = None  # not recorded (a run started before data_files.json)
            if isinstance(old_tables, dict):
                names = changed_files(old_tables, tables)
                files = "".join(f"\n  {n}" for n in names)
                files = f"\nfiles that differ:{files}" if files else ""
        raise WorkdirError(
            f"{workdir} holds another run ({RUN_FILE}): these fields change what is trained "
            f"(recorded -> now):\n{_diff_lines(diffs)}{files}\n"
            "Use another --workdir for another run (only num_steps may grow, and the fields "
            f"under {list(fields.eval) + list(fields.schedule)} may change)."
        )
    if step_done is not None and num_steps < step_done:
        raise WorkdirError(
            f"{workdir} was trained to step {step_done}; {fields.num_steps}={num_steps} is "
            f"smaller, and the checkpoints before step {step_done} are not all kept, so results "
            f"would describe the {step_done}-step model under the label {num_steps}. Pass "
            f"{fields.num_steps} >= {step_done} (a larger value continues the run) or use "
            "another --workdir."
        )


def _refuse_seeds_parent(workdir: pathlib.Path) -> None:
    path = workdir / SEEDS_FILE
    if path.exists():
        try:
            seeds = read_state_json(path, fix="").get("seeds") or ["N"]
        except (StateFileError, AttributeError):
            seeds = ["N"]
        raise WorkdirError(
            f"{workdir} holds one run per seed ({SEEDS_FILE}: seeds {seeds} in "
            f"{workdir}/seed_N), not a single run: pass --seeds (e.g. --seeds={seeds[0]}) to "
            "continue them, or use another --workdir"
        )


def check(
    workdir: str | os.PathLike[str],
    config: Any,
    *,
    experiment: str,
    fields: Fields,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """What :func:`start` would refuse, checked without writing anything.

    Returns the recorded run (``None`` when ``workdir`` holds no ``run.json``); ``data``
    ``None`` skips the data comparison (the caller compares it at :func:`start`).

    Raises:
      WorkdirError: as :func:`start` (outputs without a record included).
    """
    workdir = pathlib.Path(workdir)
    check_values(config)
    _refuse_seeds_parent(workdir)
    path = workdir / RUN_FILE
    step_done = trained_step(workdir)
    if not path.exists():
        if step_done is not None:
            raise WorkdirError(
                f"{workdir} holds checkpoints but no {RUN_FILE}: its config cannot be compared "
                "with this one. Use a new --workdir."
            )
        return None
    record = _load_record(workdir, step_done)
    if record is None or _untrained(workdir, step_done, record):
        return record  # (an untrained record is replaced by start)
    flat_new = flatten(config_dict(config))
    new_data, tables = split_listings(
        record["data"] if data is None else json.loads(json.dumps(dict(data), default=str))
    )
    num_steps = int(flat_new[fields.num_steps])
    _check(workdir, record, experiment, fields, flat_new, new_data, num_steps, step_done, tables)
    return record


def _untrained(
    workdir: pathlib.Path, step_done: int | None, record: Mapping[str, Any] | None
) -> bool:
    """Nothing of the run is kept yet: no checkpoint and no evaluation."""
    evaluations = workdir / EVALUATIONS
    return (
        step_done is None
        and not (record or {}).get("evaluations")
        and not (evaluations.is_dir() and any(evaluations.iterdir()))
    )


RUN_FIX = (
    "it holds the run's config, which every restart is compared with, and is only ever "
    "replaced whole, so it was changed from outside: restore it from a copy, or use another "
    "--workdir"
)


def _load_record(workdir: pathlib.Path, step_done: int | None) -> dict[str, Any] | None:
    """``run.json``, ``None`` when absent, or when unreadable while nothing is trained (then
    it is rebuilt by this start: logged)."""
    path = workdir / RUN_FILE
    if not path.exists():
        return None
    try:
        return read_state_json(path, fix=RUN_FIX)
    except StateFileError as err:
        if not _untrained(workdir, step_done, None):
            raise
        logging.warning("%s; nothing is trained there yet, so this start rewrites it", err.args[0])
        return None


def start(
    workdir: str | os.PathLike[str],
    config: Any,
    *,
    experiment: str,
    fields: Fields,
    data: Mapping[str, Any],
    data_location: str | None = None,
    legacy_data: Callable[[], Mapping[str, Any]] | None = None,
) -> Run:
    """Record (first start) or check (later starts) the run in ``workdir``; see the module doc.

    Takes the workdir's lock first (:func:`lock`: one writer per workdir) and writes
    ``run.json`` only after every check passed. The record of a start that trained and
    evaluated nothing (e.g. it failed loading its data) is replaced by a start that differs
    from it (logged with the differing fields): there is no result to mislabel, and the fixed
    data or config must not be refused.

    Args:
      workdir: the run folder (created if missing).
      config: the resolved experiment config (ConfigDict or mapping).
      experiment: the launcher's name; a workdir holds runs of one experiment only.
      fields: which fields may change between starts (the config module's ``FIELDS``).
      data: the data identity (compared): dataset, category, fingerprint, ...
      data_location: where the data was read from (recorded, not compared: the same data
        may move).
      legacy_data: the data identity as an earlier version computed it (called only when
        the recorded data differ from ``data``): a run recorded with it continues, its
        record unchanged (a fingerprint narrowed to the files the loader reads must not
        refuse the runs recorded before).

    Returns:
      The :class:`Run`.

    Raises:
      ConfigError: a config float is not finite, or ``seed`` is not an integer in [0, 2**32).
      WorkdirError: another process holds the workdir, or it holds another run (another
        experiment, a training-relevant config field or the data differ), was trained past
        ``num_steps``, or holds outputs without a ``run.json``.
      StateFileError: ``run.json`` of a trained run cannot be read (names it).
    """
    workdir = pathlib.Path(workdir)
    check_values(config)
    new_config = config_dict(config)
    flat_new = flatten(new_config)
    if fields.num_steps not in flat_new:
        raise KeyError(f"config has no field {fields.num_steps!r} (Fields.num_steps)")
    existed = workdir.exists()
    lock(workdir)
    try:
        return _start_locked(
            workdir, new_config, experiment, fields, data, data_location, flat_new, legacy_data
        )
    except BaseException:
        if not existed:  # leave nothing behind
            release(workdir)
            if {p.name for p in workdir.iterdir()} <= {LOCK_FILE}:
                (workdir / LOCK_FILE).unlink(missing_ok=True)
                workdir.rmdir()
        raise


def _start_locked(
    workdir: pathlib.Path,
    new_config: dict[str, Any],
    experiment: str,
    fields: Fields,
    data: Mapping[str, Any],
    data_location: str | None,
    flat_new: dict[str, Any],
    legacy_data: Callable[[], Mapping[str, Any]] | None = None,
) -> Run:
    _refuse_seeds_parent(workdir)
    new_data, tables = split_listings(json.loads(json.dumps(dict(data), default=str)))
    num_steps = int(flat_new[fields.num_steps])
    path = workdir / RUN_FILE
    step_done = trained_step(workdir)
    entry = {"time": _now(), "num_steps": num_steps, "git": _git_commit(), "device": _device()}
    had_record = path.exists()
    record = _load_record(workdir, step_done)
    if record is not None and legacy_data is not None and record.get("data") != new_data:
        old_data, old_tables = split_listings(
            json.loads(json.dumps(dict(legacy_data()), default=str))
        )
        if record.get("data") == old_data:
            logging.info("%s: data recorded with its earlier identity, unchanged", workdir)
            new_data, tables = old_data, old_tables
    if record is not None:
        try:
            _check(
                workdir,
                record,
                experiment,
                fields,
                flat_new,
                new_data,
                num_steps,
                step_done,
                tables,
            )
        except WorkdirError as err:
            if record.get("experiment") != experiment or not _untrained(workdir, step_done, record):
                raise
            logging.warning(
                "%s: replacing the record of a start that trained and evaluated nothing; %s",
                workdir,
                str(err).split("\n", 1)[-1].split("\nUse another")[0].strip(),
            )
            record = None

    if record is None:
        if (
            not had_record
            and workdir.is_dir()
            and any(
                (workdir / n).exists()
                for n in ("checkpoints", "metrics.jsonl", "results.json", "config.json")
            )
            or step_done is not None
        ):
            raise WorkdirError(
                f"{workdir} holds outputs of a run but no {RUN_FILE} (made before run records, "
                "or by something else): its config cannot be compared with this one. Use a new "
                "--workdir."
            )
        record = {
            "experiment": experiment,
            "config": new_config,
            "data": new_data,
            "data_location": data_location,
            "created": entry["time"],
            "git": entry["git"],
            "versions": _versions(),
            "device": entry["device"],
            "fields": dataclasses.asdict(fields),
            "starts": [entry],
            "evaluations": [],
        }
        run = Run(workdir, json.loads(json.dumps(record, default=str)), fields)
        workdir.mkdir(parents=True, exist_ok=True)
        if tables:
            write_json_atomic(workdir / DATA_FILES, tables)
        run._write()
        return run

    last = record["starts"][-1] if record.get("starts") else {}
    previous = flatten(record.get("last_config", record["config"]))
    changed = {
        k: [previous.get(k, _MISSING), flat_new.get(k, _MISSING)]
        for k in sorted(set(previous) | set(flat_new))
        if fields.kind(k) in ("num_steps", "schedule", "label")
        and previous.get(k, _MISSING) != flat_new.get(k, _MISSING)
    }
    if changed:
        entry["changed"] = changed
    if last.get("num_steps") is not None and num_steps > last["num_steps"]:
        entry["continues_from_step"] = step_done or 0
    entry["data_location"] = data_location
    record["starts"] = [*record.get("starts", []), entry]
    record["last_config"] = new_config
    if tables and not (workdir / DATA_FILES).exists():  # a run recorded before data_files.json
        write_json_atomic(workdir / DATA_FILES, tables)
    run = Run(workdir, record, fields)
    run._write()
    return run


def open_trained(
    workdir: str | os.PathLike[str],
    config: Any,
    *,
    experiment: str,
    fields: Fields,
    data: Mapping[str, Any] | None = None,
) -> Run:
    """The run of a trained ``workdir`` for a tool that only evaluates it (records no start).

    Checks what :func:`start` checks (same experiment, training-relevant fields and, when
    given, the data identity) and that the workdir holds a checkpoint at ``num_steps``.
    """
    workdir = pathlib.Path(workdir)
    path = workdir / RUN_FILE
    if not path.exists():
        raise WorkdirError(f"{workdir} has no {RUN_FILE}: not a run of {experiment!r}")
    check_values(config)
    record = read_state_json(path, fix=RUN_FIX)
    lock(workdir)
    flat_new = flatten(config_dict(config))
    num_steps = int(flat_new[fields.num_steps])
    step_done = trained_step(workdir)
    new_data, tables = split_listings(
        record["data"] if data is None else json.loads(json.dumps(dict(data), default=str))
    )
    _check(workdir, record, experiment, fields, flat_new, new_data, num_steps, step_done, tables)
    if step_done != num_steps:
        raise WorkdirError(
            f"{workdir} is trained to step {step_done}, not {fields.num_steps}={num_steps}: "
            "finish its training first (rerun its launcher)"
        )
    return Run(workdir, record, fields)
