"""Evaluations of a run: each in its own folder, its newest outputs linked from the workdir.

``workdir/evaluations/step<N>_<hash>/`` (:func:`folder_name`: the hash covers the evaluation
config and the checkpoint's checksums) holds one evaluation's ``results.json``, figures and
TensorBoard event file (:class:`Evaluation`); ``workdir/results.json``, ``workdir/figures``,
... are symlinks into the newest one (:meth:`Evaluation.publish`, :func:`replace_link`). A
workdir copied with ``cp -rL`` has copies where the links were; those are recognized as
copies (:func:`copied_outputs`) and replaced, a user's own file is left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
from collections.abc import Collection, Mapping
from typing import Any, Protocol

import jax

from vae_xai import distributed
from vae_xai import results as results_lib
from vae_xai.metric_writer import MetricWriter, flatten_numbers
from vae_xai.provenance import git_commit as _git_commit
from vae_xai.provenance import now as _now
from vae_xai.workdir.fields import flatten

__all__ = [
    "EVALUATIONS",
    "Evaluation",
    "RunRecord",
    "copied_outputs",
    "folder_name",
    "replace_link",
]

EVALUATIONS = "evaluations"
_EVENTS = "events.out.tfevents"


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
    """The top-level files and folders of ``workdir`` that are copies of an evaluation's output.

    Real files and folders equal to some ``workdir/evaluations/*/<name>``: links that a
    ``cp -rL`` turned into copies. Taken before an evaluation writes, since a rerun of the same
    evaluation rewrites the very output the copy was made of.

    Args:
      workdir: the run folder.

    Returns:
      Their names.
    """
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
    turns the links into copies) is replaced when its name is in ``copies`` or it is a copy of
    some output under ``outputs`` (any evaluation's file of that name); anything else is a
    user's own file: left alone, with a warning.

    Args:
      link: the path in the workdir.
      target: where it points, relative to ``link.parent``.
      outputs: the ``workdir/evaluations`` folder.
      copies: names known to be copies (:func:`copied_outputs`, taken before the evaluation
        wrote).

    Returns:
      Whether the link now points at ``target``.
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


def _commit_of(git: Any) -> Any:
    """The commit of a provenance ``git`` entry (``{"commit", ...}``), else the entry."""
    return git.get("commit") if isinstance(git, dict) else git


def _short_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def folder_name(
    eval_config: Mapping[str, Any], *, step: int, label: str, checkpoint: str | None
) -> str:
    """The name of an evaluation's folder: ``<label><step>_<hash>``.

    Args:
      eval_config: the evaluation config, as plain JSON values.
      step: the step of the model evaluated.
      label: the name's prefix (``"step"``).
      checkpoint: the checkpoint's digest (:func:`vae_xai.workdir.checkpoint_digest`), or
        ``None`` for a step saved without checksums.

    Returns:
      The folder name. The hash covers ``eval_config`` and, when given, ``checkpoint``: another
      checkpoint of this step (retrained after a damaged one was moved aside, say) gets
      another folder, so an evaluation never replaces one of a different checkpoint.
    """
    key = eval_config if checkpoint is None else {**eval_config, "checkpoint": checkpoint}
    return f"{label}{step}_{_short_hash(key)}"


class RunRecord(Protocol):
    """What an evaluation uses of its run (:class:`vae_xai.workdir.Run`, which makes
    evaluations; a protocol, so that this module does not import that one)."""

    workdir: pathlib.Path
    record: dict[str, Any]
    copies: set[str] | None

    def summary(self) -> dict[str, Any]:
        """What a results file says about the run."""
        ...

    def _write(self) -> None:
        """Write ``record`` to ``run.json`` (atomically)."""
        ...


class Evaluation:
    """One evaluation of a run: its own folder, config and results.

    Args:
      run: the run it evaluates (:class:`vae_xai.workdir.Run`).
      folder: its folder (created), ``workdir/evaluations/<folder_name>``.
      config: the evaluation config, as plain JSON values.
      step: the step of the model evaluated.
      checkpoint: the checkpoint's digest, or ``None``.
    """

    def __init__(
        self,
        run: RunRecord,
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
        """The evaluation's ``results.json``."""
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

    def saved_results(self, seed: int | None = None) -> dict[str, Any] | None:
        """This evaluation's ``results.json`` as :meth:`save_results` returned it, if it was
        written and can stand for a new evaluation; else ``None``.

        The folder's name covers the step, the evaluation config and the checkpoint's
        checksums, and ``results.json`` is written last (atomically), so a file there is the
        complete outcome of evaluating this very model this very way. ``None`` (evaluate
        again) for a step saved without checksums (its folder name cannot tell a retrained
        step from the first), for several processes (each would have to see the same file),
        for a file that does not read as a results document, and for one without ``seed``.

        Args:
          seed: the seed whose entry it must hold; ``None``: any.

        Returns:
          The document with ``results_path``, or ``None``.
        """
        if self.checkpoint is None or jax.process_count() > 1:
            return None
        if not self.results_path.is_file():
            return None
        try:
            doc = results_lib.read(self.results_path)
            results_lib.check(doc)
        except ValueError as err:
            logging.warning("evaluating again: %s", err)
            return None
        if seed is not None and str(seed) not in doc["per_seed"]:
            return None
        header = doc.get("evaluation")
        if not isinstance(header, dict) or header.get("checkpoint") != self.checkpoint:
            return None
        written_by, now = _commit_of(header.get("git")), _commit_of(_git_commit())
        if written_by != now:
            logging.warning(
                "reusing %s, written by commit %s (this is %s); move the folder aside to "
                "evaluate with this code",
                self.results_path, written_by, now,
            )  # fmt: skip
        return {**doc, "results_path": str(self.results_path)}

    def save_results(
        self,
        results: Mapping[str, Any] | None = None,
        *,
        per_seed: Mapping[Any, Mapping[str, Any]] | None = None,
        seed: int | None = None,
        extra: Mapping[str, Any] | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Write the evaluation's ``results.json`` and record the evaluation in ``run.json``.

        Written through the results schema (:func:`vae_xai.results.write`, atomically), together
        with a TensorBoard event file of its numbers and figures. The schema's ``config`` and
        ``data`` are the run record's; ``extra`` follows the :meth:`header` entries.

        Args:
          results: one seed's numbers.
          per_seed: ``{seed: numbers}`` instead, for a run that trains several seeds itself.
          seed: the seed of ``results``; default the config's ``seed``, else 0.
          extra: more top-level entries (e.g. ``paper``, ``notes``).
          publish: link the outputs from the workdir (:meth:`publish`).

        Returns:
          What was written, with ``results_path``.

        Raises:
          ValueError: both or neither of ``results`` and ``per_seed``.
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
        """Point ``workdir/<name>`` at every output of this evaluation.

        Symlinks, replaced atomically; links of an earlier evaluation that this one lacks are
        removed. A real file or folder of that name in the workdir is left alone
        (:func:`replace_link`).

        Returns:
          The links made; ``[]`` on processes other than 0 (process 0 links).
        """
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
