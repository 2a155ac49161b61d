"""The run record: ``workdir/run.json``, written on a run's first start and compared on every
later one (:func:`start`, :func:`check`, :func:`open_trained`), and the started :class:`Run`.

See :mod:`vae_xai.workdir` for what is compared, refused and allowed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from vae_xai.provenance import device as _device
from vae_xai.provenance import git_commit as _git_commit
from vae_xai.provenance import now as _now
from vae_xai.provenance import versions as _versions
from vae_xai.provenance import write_json_atomic
from vae_xai.workdir.checkpoints import checkpoint_digest, trained_step
from vae_xai.workdir.errors import WorkdirError
from vae_xai.workdir.evaluations import EVALUATIONS, Evaluation, copied_outputs, folder_name
from vae_xai.workdir.fields import Fields, check_values, config_dict, diff_flat, flatten, select
from vae_xai.workdir.fingerprint import DATA_FILES, changed_files, split_listings
from vae_xai.workdir.locking import LOCK_FILE, lock, release
from vae_xai.workdir.state_files import StateFileError, read_state_json

__all__ = ["RUN_FILE", "RUN_FIX", "SEEDS_FILE", "Run", "check", "open_trained", "start"]

RUN_FILE = "run.json"
# The record of a workdir whose seeds are runs of their own (workdir/seed_N; vae_xai.seeds).
SEEDS_FILE = "seeds.json"
_MISSING = "<absent>"


def _diff_lines(diffs: Sequence[tuple[str, Any, Any]]) -> str:
    return "\n".join(
        f"  {k}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"
        for k, old, new in diffs
    )


class Run:
    """A started run: its workdir, record (``run.json``) and declared fields.

    Made by :func:`start` and :func:`open_trained`.

    Args:
      workdir: the run folder.
      record: the content of ``run.json``.
      fields: the config module's :class:`~vae_xai.workdir.Fields`.
    """

    def __init__(self, workdir: pathlib.Path, record: dict[str, Any], fields: Fields):
        self.workdir = workdir
        self.record = record
        self.fields = fields
        # copies of outputs at the top of the workdir (cp -rL), taken before any evaluation
        # of this start writes (see copied_outputs)
        self.copies: set[str] | None = None

    @property
    def path(self) -> pathlib.Path:
        """``workdir/run.json``."""
        return self.workdir / RUN_FILE

    def _write(self) -> None:
        write_json_atomic(self.path, self.record)

    def summary(self) -> dict[str, Any]:
        """What a results file says about the run (identity, not the evaluation).

        Returns:
          ``{"workdir", "experiment", "data", "created", "git", "versions", "device", "starts"}``.
        """
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
        """The evaluation-only fields of ``config``, as declared in ``Fields.eval``.

        Args:
          config: the experiment config.

        Returns:
          ``{dotted key: value}``.
        """
        return select(config_dict(config), self.fields.eval)

    def evaluation(
        self, eval_config: Mapping[str, Any], *, step: int, label: str = "step"
    ) -> Evaluation:
        """The folder of the evaluation of the model at ``step`` with ``eval_config``.

        The same model (checkpoint digest) and configuration give the same folder (redoing it
        replaces identical outputs); any other gives a new one.

        Args:
          eval_config: whatever changes the evaluation's outputs (e.g. :meth:`eval_config` plus
            the images it is scored on).
          step: the step of the model evaluated.
          label: the folder name's prefix.

        Returns:
          The :class:`~vae_xai.workdir.Evaluation`.

        Raises:
          TypeError: ``step`` is not an integer.
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
        name = folder_name(eval_config, step=step, label=label, checkpoint=digest)
        return Evaluation(self, self.workdir / EVALUATIONS / name, eval_config, step, digest)


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
    diffs = diff_flat(
        flat_old, flat_new, missing=_MISSING, keep=lambda k: fields.kind(k) == "train"
    )
    diffs += [
        (f"data.{k}", old, new)
        for k, old, new in diff_flat(flatten(record["data"]), flatten(new_data), missing=_MISSING)
    ]
    if diffs:
        files = ""
        if tables and any(k.startswith("data.") for k, _, _ in diffs):
            try:
                old_tables = json.loads((workdir / DATA_FILES).read_text())
            except (OSError, ValueError):
                old_tables = None  # not recorded: no file names to report
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
            seeds = read_state_json(path, fix="").get("seeds")
        except (StateFileError, AttributeError):
            seeds = None
        if not seeds:
            raise WorkdirError(
                f"{path} is empty or unreadable; that file marks {workdir} as a folder of "
                f"per-seed runs ({workdir}/seed_N, written by --seeds): if the seed_N folders "
                "are yours, pass --seeds with their seeds to continue them; otherwise remove "
                f"{path}"
            )
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

    Args:
      workdir: the run folder.
      config: the resolved experiment config.
      experiment: the launcher's name.
      fields: the config module's ``FIELDS``.
      data: the data identity; ``None`` skips the data comparison (the caller compares it at
        :func:`start`).

    Returns:
      The recorded run, or ``None`` when ``workdir`` holds no ``run.json``.

    Raises:
      ConfigError: as :func:`start`.
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
        return _start_locked(workdir, new_config, experiment, fields, data, data_location, flat_new)
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
) -> Run:
    _refuse_seeds_parent(workdir)
    new_data, tables = split_listings(json.loads(json.dumps(dict(data), default=str)))
    num_steps = int(flat_new[fields.num_steps])
    path = workdir / RUN_FILE
    step_done = trained_step(workdir)
    entry = {"time": _now(), "num_steps": num_steps, "git": _git_commit(), "device": _device()}
    had_record = path.exists()
    record = _load_record(workdir, step_done)
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
        k: [old, new]
        for k, old, new in diff_flat(
            previous,
            flat_new,
            missing=_MISSING,
            keep=lambda k: fields.kind(k) in ("num_steps", "schedule", "label"),
        )
    }
    if changed:
        entry["changed"] = changed
    if last.get("num_steps") is not None and num_steps > last["num_steps"]:
        entry["continues_from_step"] = step_done or 0
    entry["data_location"] = data_location
    record["starts"] = [*record.get("starts", []), entry]
    record["last_config"] = new_config
    if tables and not (workdir / DATA_FILES).exists():  # a record without its per-file table
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
    given, the data identity) and takes the workdir's lock.

    Args:
      workdir: the run folder.
      config: the resolved experiment config.
      experiment: the launcher's name.
      fields: the config module's ``FIELDS``.
      data: the data identity; ``None`` skips the data comparison.

    Returns:
      The :class:`Run`.

    Raises:
      WorkdirError: no ``run.json``, another run, or no checkpoint at ``num_steps``.
      StateFileError: ``run.json`` cannot be read.
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
