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

A workdir that holds outputs but no ``run.json`` is refused: its config cannot be checked.

The package, one job a module (everything below is importable from ``vae_xai.workdir``):

* :mod:`~vae_xai.workdir.record`: ``run.json`` (:func:`start`, :func:`check`,
  :func:`open_trained`, :class:`Run`) and the comparison of a start with it.
* :mod:`~vae_xai.workdir.evaluations`: evaluation folders (:class:`Evaluation`), the links
  to the newest outputs and the copies a ``cp -rL`` made of them.
* :mod:`~vae_xai.workdir.fields`: the config as the record sees it (:class:`Fields`,
  :func:`flatten`, :func:`diff_flat`, :func:`config_dict`, :func:`check_values`).
* :mod:`~vae_xai.workdir.fingerprint`: the data identity (:func:`fingerprint_files`).
* :mod:`~vae_xai.workdir.checkpoints`: the trained step and a checkpoint's checksums.
* :mod:`~vae_xai.workdir.locking`: one writer per workdir (:func:`lock`).
* :mod:`~vae_xai.workdir.state_files`: reading state files (:func:`read_state_json`).
* :mod:`~vae_xai.workdir.errors`: :class:`WorkdirError`.

Provenance and atomic JSON writes live in :mod:`vae_xai.provenance` (re-exported here).
"""

from __future__ import annotations

from vae_xai.provenance import provenance, write_json_atomic
from vae_xai.workdir.checkpoints import CHECKSUMS_FILE, checkpoint_digest, trained_step
from vae_xai.workdir.errors import WorkdirError
from vae_xai.workdir.evaluations import EVALUATIONS, Evaluation, copied_outputs, replace_link
from vae_xai.workdir.fields import (
    SEED_LIMIT,
    Fields,
    check_values,
    config_dict,
    diff_flat,
    flatten,
)
from vae_xai.workdir.fingerprint import (
    CONTENT_HASH_LIMIT,
    DATA_FILES,
    LISTING,
    changed_files,
    fingerprint_files,
    split_listings,
)
from vae_xai.workdir.locking import LOCK_FILE, lock, release
from vae_xai.workdir.record import RUN_FILE, RUN_FIX, SEEDS_FILE, Run, check, open_trained, start
from vae_xai.workdir.state_files import StateFileError, read_state_json

__all__ = [
    "CHECKSUMS_FILE",
    "CONTENT_HASH_LIMIT",
    "DATA_FILES",
    "EVALUATIONS",
    "LISTING",
    "LOCK_FILE",
    "RUN_FILE",
    "RUN_FIX",
    "SEEDS_FILE",
    "SEED_LIMIT",
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
    "diff_flat",
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
