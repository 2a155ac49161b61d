"""What the one-class experiments (MNIST localization control, MVTec-AD, UCSD Ped1) share:
one :class:`~vae_xai.experiments.template.Experiment` shape (:func:`experiment`) whose train
step loads the data and trains through :func:`vae_xai.localization.train_on_normal`, and whose
evaluate step runs :func:`vae_xai.localization.evaluate_test_set`; and their training batches,
which come from :mod:`data_pipelines` (the core takes them as an argument, ``epoch_batches``).
Each experiment gives only what differs: its inputs, how it loads its data, its model."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from data_pipelines import batching
from vae_xai import localization
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import template

__all__ = ["Data", "epoch_batch_fn", "experiment"]


def epoch_batch_fn(
    images: np.ndarray, batch_size: int, *, seed: int = 0
) -> Callable[[int], dict[str, np.ndarray]]:
    """``step -> {"image": (batch_size, H, W, C)}``, a deterministic function of ``step``.

    :func:`data_pipelines.batching.epoch_batch_fn` with each batch in index order: epoch
    ``e`` visits the permutation of ``default_rng([seed, e])``; incomplete last batches are
    dropped.

    Args:
      images: ``(N, H, W, C)`` training images.
      batch_size: images per batch.
      seed: the permutation seed.

    Returns:
      The batch function.
    """
    return batching.epoch_batch_fn({"image": images}, batch_size, seed=seed, sort_within_batch=True)


@dataclasses.dataclass(frozen=True)
class Data:
    """A one-class experiment's data, as its ``load`` returns it.

    Attributes:
      train: ``(N, H, W, C)`` normal training images.
      test: ``"image"``, ``"mask"``, ``"label"`` and optionally ``"defect"`` (the per-image
        group for per-defect metrics).
      facts: the experiment's own entries at the head of its results (dataset, counts, ...).
      notes: what the results' ``notes`` add to :data:`vae_xai.localization.RESULT_NAMES_NOTE`.
    """

    train: np.ndarray
    test: Mapping[str, np.ndarray]
    facts: Mapping[str, Any]
    notes: str = ""


def experiment(
    *,
    name: str,
    fields: workdir_lib.Fields,
    validate: Callable[[Any], None],
    inputs: Callable[..., template.Inputs],
    load: Callable[[Any, workdir_lib.Run, template.Inputs], Data],
    build_model: Callable[[Any], Any],
    title: Callable[[Any, template.Inputs], str],
    dense_after: Callable[[Any], Callable[[str], str | None]] = lambda config: lambda layer: None,
    augment: Callable[[Any], Callable | None] = lambda config: None,
    paper: Callable[[Any, template.Inputs], Mapping[str, Any] | None] | None = None,
) -> template.Experiment:
    """A one-class localization experiment: train a VAE on normal images, evaluate every map of
    ``config.eval`` on a test set with pixel masks.

    Args:
      name, fields, validate, inputs, paper: as :class:`~vae_xai.experiments.template.Experiment`.
      load: ``(config, run, inputs) -> Data`` (timed as the results' ``data_load_s``).
      build_model: ``config -> model``.
      title: ``(config, inputs) -> str``, the figures' title (the step count is appended).
      dense_after: ``config -> (layer -> the Dense after it, or None)`` for the attention.
      augment: ``config -> (key, images) -> images`` applied to training batches, or ``None``.

    Returns:
      The experiment's spec; the results are ``{**data.facts, "data_load_s", "train",
      **evaluate_test_set(...)}`` and ``notes``.
    """

    def train(config: Any, run: workdir_lib.Run, inp: template.Inputs) -> template.Trained:
        t0 = time.perf_counter()
        data = load(config, run, inp)
        load_s = time.perf_counter() - t0
        model = build_model(config)
        state, info = localization.train_on_normal(
            model,
            config,
            workdir=run.workdir,
            train_images=data.train,
            epoch_batches=epoch_batch_fn,
            augment=augment(config),
            progress=inp.values.get("progress", True),
        )
        return template.Trained(step=info["steps"], model=(model, state, data, load_s), info=info)

    def evaluate(
        config: Any,
        run: workdir_lib.Run,
        trained: template.Trained,
        inp: template.Inputs,
        evaluation: workdir_lib.Evaluation,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        model, state, data, load_s = trained.model
        results = localization.evaluate_test_set(
            model,
            config,
            state,
            figure_dir=evaluation.dir / "figures",
            train_images=data.train,
            test=data.test,
            dense_after=dense_after(config),
            title=f"{title(config, inp)}, {trained.step} steps",
        )
        results = {**data.facts, "data_load_s": load_s, "train": dict(trained.info), **results}
        return results, {"notes": localization.RESULT_NAMES_NOTE + data.notes}

    return template.Experiment(
        name=name,
        fields=fields,
        validate=validate,
        inputs=inputs,
        train=train,
        evaluate=evaluate,
        paper=paper,
    )
