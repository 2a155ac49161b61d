"""One experiment template: a small spec per experiment, run by one function.

Every experiment (:mod:`vae_xai.experiments.mnist_attention`, ``mnist_localization``,
``mvtec_localization``, ``ucsd_localization``, ``dsprites_disentanglement``, ``quickstart``)
is an :class:`Experiment`: its name, the config fields that may change between starts of a
workdir, a validation, and four steps (check the inputs, train, evaluate, the paper's numbers).
:func:`run` owns what they share:

1. validate the config and check the inputs (data files, flags) before any work, so that a
   bad entry fails in seconds naming the field, path or file;
2. start or resume the run (:func:`vae_xai.workdir.start`: another training config or data on
   a trained workdir is refused), or with ``seeds`` one run per seed in ``workdir/seed_N``
   aggregated over the seeds (:func:`vae_xai.seeds.run_seeds`);
3. train (the experiment's ``train``; resumes from the last checkpoint);
4. open the evaluation's own folder (``workdir/evaluations/step<N>_<hash>/``: the evaluation
   config, the step and the checkpoint's digest name it), evaluate, and write
   ``results.json`` through the results schema (:mod:`vae_xai.results`) with the paper's
   numbers, linked from the workdir. A folder that already holds its ``results.json`` was
   this model evaluated this way: it is read back and linked, not computed again
   (:meth:`~vae_xai.workdir.Evaluation.saved_results`), so rerunning a finished command, or
   naming every seed to aggregate them, costs seconds. Move the folder aside to evaluate
   again (after changing the code, say).

A new experiment writes an :class:`Experiment` and a ``train_and_evaluate`` that calls
:func:`run`; see ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.workdir import Evaluation, Fields, Run

__all__ = ["Experiment", "Inputs", "Trained", "run"]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What an experiment's ``inputs`` step found, checked before any work.

    Attributes:
      data: the data identity recorded in ``run.json`` (dataset name and the fingerprint of
        the files the loaders read): another data on a trained workdir is refused.
      location: where the data was read from (recorded, not compared), or ``None``.
      values: whatever ``train`` and ``evaluate`` need besides the config (paths, flags,
        loaded arrays).
      eval_identity: entries besides the config's evaluation fields that change the
        evaluation's outputs (e.g. the images the metrics are scored on); they name the
        evaluation folder.
    """

    data: Mapping[str, Any]
    location: str | None = None
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    eval_identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Trained:
    """What an experiment's ``train`` step returns.

    Attributes:
      step: the step the model was trained to (names the evaluation folder).
      model: whatever ``evaluate`` needs of the trained run (model, state, ...).
      info: training facts reported in the results (wall time, steps, ...).
    """

    step: int
    model: Any
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One experiment, as data and four functions.

    Attributes:
      name: the experiment's name (recorded in ``run.json``; another name's workdir is refused).
      fields: which config fields may change between starts of a workdir
        (:class:`vae_xai.workdir.Fields`).
      validate: ``config -> None``; raises :class:`~vae_xai.validation.ConfigError` naming
        the field.
      inputs: ``(config, **args) -> Inputs``: checks and fingerprints the data the run reads
        (fast: no training, no download); ``args`` are the launcher's arguments
        (``data_dir``, ...).
      train: ``(config, run, inputs) -> Trained``: trains or resumes in ``run.workdir``.
      evaluate: ``(config, run, trained, inputs, evaluation) -> (results, extra)``: writes
        its figures into ``evaluation.dir`` and returns the results (one seed's numbers) and
        the extra entries of ``results.json`` (``notes``, ...).
      paper: ``(config, inputs) -> dict | None``: the paper's numbers to print beside ours
        (``results.json``'s ``paper``; ``None`` where the paper has none for this run);
        ``None`` for an experiment the paper does not have.
      train_seeds: with ``seeds``, ``(configs by seed, workdir, inputs) -> None`` called once
        after every seed's run is started and before any trains (dSprites' ``--ensemble``
        trains all seeds as one vmapped step there); ``None``: seeds train one by one.
      aggregate: with ``seeds``, ``(config, documents by seed, folder, inputs) -> extra``
        entries of the aggregate ``results.json`` (it may write files into ``folder``, linked
        from the workdir).
      reuse_results: read back an evaluation whose folder already holds ``results.json``
        instead of calling ``evaluate`` (``False`` for an experiment whose ``evaluate`` reads
        its earlier results itself, e.g. to add steps to a learning curve).
    """

    name: str
    fields: Fields
    validate: Callable[[Any], None]
    inputs: Callable[..., Inputs]
    train: Callable[[Any, Run, Inputs], Trained]
    evaluate: Callable[[Any, Run, Trained, Inputs, Evaluation], tuple[dict, dict]]
    paper: Callable[[Any, Inputs], Mapping[str, Any] | None] | None = None
    train_seeds: Callable[[Mapping[int, Any], pathlib.Path, Inputs], None] | None = None
    aggregate: (
        Callable[[Any, Mapping[int, Mapping[str, Any]], pathlib.Path, Inputs], Mapping[str, Any]]
        | None
    ) = None
    reuse_results: bool = True


def _start(experiment: Experiment, config: Any, workdir: str | pathlib.Path, inputs: Inputs) -> Run:
    return workdir_lib.start(
        workdir,
        config,
        experiment=experiment.name,
        fields=experiment.fields,
        data=inputs.data,
        data_location=inputs.location,
    )


def _run_one(
    experiment: Experiment, config: Any, run_: Run, inputs: Inputs, train_only: bool
) -> dict[str, Any] | None:
    """Train, evaluate and save one started run; returns its results document (``None``
    with ``train_only``)."""
    trained = experiment.train(config, run_, inputs)
    if train_only:
        return None
    evaluation = run_.evaluation(
        {**run_.eval_config(config), **inputs.eval_identity}, step=int(trained.step)
    )
    if experiment.reuse_results:
        saved = evaluation.saved_results(seed=workdir_lib.config_dict(config).get("seed", 0))
        if saved is not None:  # this model, evaluated this way: read back, not recomputed
            logging.info("%s: reusing the evaluation in %s", run_.workdir, evaluation.dir)
            evaluation.publish()
            return saved
    results, extra = experiment.evaluate(config, run_, trained, inputs, evaluation)
    if experiment.paper is not None:  # the paper's numbers, or None where it has none
        extra = {"paper": experiment.paper(config, inputs), **extra}
    return evaluation.save_results(results, extra=extra)


def run(
    experiment: Experiment,
    config: Any,
    workdir: str | pathlib.Path,
    *,
    seeds: Sequence[int] | None = None,
    train_only: bool = False,
    **args: Any,
) -> dict[str, Any] | None:
    """Validate, check the inputs, then train and evaluate one run or one run per seed.

    Args:
      experiment: the experiment's spec.
      config: its config (``ml_collections.ConfigDict``).
      workdir: the run's folder; with ``seeds``, the folder of one run per seed.
      seeds: ``None``: one run with ``config.seed`` in ``workdir``; else each seed one run in
        ``workdir/seed_N`` (``config.seed = N``), aggregated over the seeds.
      train_only: train (or resume) only; nothing is evaluated.
      **args: the experiment's own arguments, passed to its ``inputs`` step.

    Returns:
      The ``results.json`` written (the results schema; for seeds, the aggregate), or
      ``None`` with ``train_only``.
    """
    experiment.validate(config)
    inputs = experiment.inputs(config, **args)

    if seeds is None:
        run_ = _start(experiment, config, workdir, inputs)
        return _run_one(experiment, config, run_, inputs, train_only)

    started: dict[pathlib.Path, Run] = {}

    def one(cfg: Any, wd: str | pathlib.Path) -> dict[str, Any]:
        run_ = started.pop(pathlib.Path(wd), None) or _start(experiment, cfg, wd, inputs)
        return _run_one(experiment, cfg, run_, inputs, train_only)

    before = None
    if experiment.train_seeds is not None:

        def before(configs: Mapping[int, Any]) -> None:
            for seed, cfg in configs.items():
                wd = pathlib.Path(workdir) / f"seed_{seed}"
                started[wd] = _start(experiment, cfg, wd, inputs)
            experiment.train_seeds(configs, pathlib.Path(workdir), inputs)

    aggregate = None
    if experiment.aggregate is not None:

        def aggregate(docs: Mapping[int, Mapping[str, Any]], folder: pathlib.Path) -> Mapping:
            return experiment.aggregate(config, docs, folder, inputs)

    return seeds_lib.run_seeds(
        workdir,
        config,
        seeds,
        one,
        experiment=experiment.name,
        fields=experiment.fields,
        before=before,
        aggregate=aggregate,
    )
