"""One-class VAE experiments: train on normal images, produce maps, run the evaluators.

:func:`train_on_normal` and :func:`evaluate_test_set` are what the one-class experiments
(MNIST localization control, MVTec-AD, UCSD Ped1) call: the first trains (or resumes) through
:func:`vae_xai.train.train`, the second evaluates through :func:`evaluate` with the producers
and evaluators that ``config.eval`` selects
(:func:`vae_xai.localization.producers.producers_from_config`,
:func:`vae_xai.localization.evaluators.evaluators_from_config`). :func:`check_config` builds
both from the config before any work, so a bad entry fails in seconds, naming the field.
"""

from __future__ import annotations

import itertools
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import numpy as np
import optax
from jax.typing import ArrayLike

from vae_xai import train as train_lib
from vae_xai import validation
from vae_xai.localization.evaluators import Evaluator, collect, evaluators_from_config
from vae_xai.localization.maps import (
    DEFAULT_BASELINES,
    DEFAULT_CRITERIA,
    REFERENCES,
    Context,
    MapProducer,
    check_entry,
)
from vae_xai.localization.producers import producers_from_config
from vae_xai.localization.vae_maps import EVAL_KEYS as VAE_MAP_KEYS
from vae_xai.train import TrainState

Likelihood = Literal["gaussian", "bernoulli"]
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]

# The keys of an experiment's ``config.train``: the ELBO's hyperparameters and the schedule.
TRAIN_KEYS = (
    "num_steps",
    "batch_size",
    "learning_rate",
    "beta",
    "likelihood",
    "variance",
    "checkpoint_every",
    "log_every",
)


def variables_of(state: TrainState) -> dict[str, Any]:
    """The variables for ``model.apply`` in eval mode.

    Args:
      state: a trained :class:`~vae_xai.train.TrainState`.

    Returns:
      ``{"params": ..., **model_state}``.
    """
    return {"params": state.params, **state.model_state}


# ``(images, batch_size, *, seed) -> (step -> {"image": (batch_size, H, W, C)})``: how the
# training images are batched, given by the caller (the one-class experiments pass
# vae_xai.experiments.one_class.epoch_batch_fn; the core imports no data pipeline).
EpochBatches = Callable[..., Callable[[int], Mapping[str, np.ndarray]]]


def _train(
    model: Any,
    images: np.ndarray,
    *,
    epoch_batches: EpochBatches,
    workdir: str | pathlib.Path,
    num_steps: int,
    batch_size: int,
    learning_rate: float = 3e-4,
    beta: float = 1.0,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    augment: AugmentFn | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    log_every: int = 50,
    progress: bool = True,
) -> tuple[TrainState, train_lib.TrainInfo]:
    """Adam on the ELBO of normal ``images`` ``(N, H, W, C)``, via :func:`vae_xai.train.train`."""
    images = np.asarray(images, np.float32)
    optimizer = optax.adam(learning_rate)
    state = train_lib.init_state(model, optimizer, images.shape[1:], seed=seed)
    update = train_lib.vae_update_fn(
        model, optimizer, beta=beta, likelihood=likelihood, variance=variance, augment=augment
    )
    return train_lib.train(
        state,
        update,
        epoch_batches(images, batch_size, seed=seed),
        workdir=workdir,
        num_steps=num_steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        progress=progress,
    )


# The keys an experiment's ``config.eval`` may hold (read by the producers and evaluators).
EVAL_KEYS = (
    "layers",
    "references",
    "criteria",
    "baselines",
    "sample",
    "num_samples",
    "batch_size",
    "max_fpr",
    "image_score",
    "overlay_layer",
    "overlays_per_group",
    "evaluators",
    *VAE_MAP_KEYS,
)


def from_config(eval_config: Mapping[str, Any]) -> tuple[list[MapProducer], list[Evaluator]]:
    """The map producers and evaluators that ``config.eval`` selects.

    The producers and evaluators check their own entries
    (:func:`~vae_xai.localization.producers.producers_from_config`,
    :func:`~vae_xai.localization.evaluators.evaluators_from_config`); here, the keys
    themselves (:data:`EVAL_KEYS`) and ``batch_size``, which only the :class:`Context` reads.

    Args:
      eval_config: the ``config.eval`` mapping (a ``ConfigDict`` or a dict).

    Returns:
      ``(producers, evaluators)``, in results and run order.

    Raises:
      ConfigError: an unknown key (field ``eval``), an unknown producer or evaluator, or a
        bad entry, naming the field.
    """
    e = dict(eval_config)
    unknown = set(e) - set(EVAL_KEYS)
    if unknown:
        raise validation.ConfigError("eval", f"unknown eval config keys: {sorted(unknown)}")
    if "batch_size" in e:
        check_entry(validation.at_least, "eval.batch_size", e["batch_size"], 1)
    producers = producers_from_config(e)
    evaluators = evaluators_from_config(e, produced=[p.name for p in producers])
    return producers, evaluators


def evaluate(
    ctx: Context, producers: Sequence[MapProducer], evaluators: Sequence[Evaluator]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Produce every map, run every evaluator over them, nest their pairs.

    Args:
      ctx: the shared :class:`~vae_xai.localization.maps.Context`.
      producers: the map producers, in results order (names must be distinct).
      evaluators: the evaluators, in run order.

    Returns:
      ``(results, maps)``: ``results`` from :func:`~vae_xai.localization.evaluators.collect`
      (``"metrics"``, ``"latent_detection"``, ``"figures"``, ...) plus ``"eval_wall_s"`` and
      ``"map_cost"``: for each map, ``{"wall_s", "ms_per_image"}``, the seconds it costs on its
      own (:meth:`~vae_xai.localization.maps.Context.map_of`: its wall time, jit compilation
      included, plus the maps it reused) and per test image; ``maps`` the ``(N, H, W)`` maps by
      name, in producer order.

    Raises:
      ValueError: two producers share a name.
    """
    t0 = time.perf_counter()
    maps: dict[str, np.ndarray] = {}
    for producer in producers:
        if producer.name in maps:
            raise ValueError(f"two map producers are named {producer.name!r}")
        maps[producer.name] = ctx.map_of(producer)
    n = len(ctx.test_images)
    cost = {
        name: {"wall_s": ctx.seconds(name), "ms_per_image": 1000 * ctx.seconds(name) / n}
        for name in maps
    }
    results = collect(itertools.chain.from_iterable(e.run(ctx, maps) for e in evaluators))
    results["map_cost"] = cost
    results["eval_wall_s"] = time.perf_counter() - t0
    return results, maps


def evaluate_one_class(
    model: Any,
    variables: Mapping[str, Any],
    *,
    train_images: ArrayLike,
    test_images: ArrayLike,
    masks: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    layers: Sequence[str],
    references: Sequence[str] = REFERENCES,
    dense_after: Callable[[str], str | None] = lambda layer: None,
    sample: bool = True,
    num_samples: int = 1,
    criteria: Sequence[str] = DEFAULT_CRITERIA,
    batch_size: int = 16,
    seed: int = 0,
    max_fpr: float = 0.3,
    image_score: Literal["max", "mean"] = "max",
    figure_dir: str | pathlib.Path | None = None,
    overlay_layer: str | None = None,
    overlays_per_group: int = 4,
    title: str | None = None,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    beta: float = 1.0,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reconstruction-error and anomaly-attention maps on a test set, their metrics, figures.

    The keyword form of :func:`evaluate` with every producer and evaluator: the keywords
    named like ``config.eval`` entries are those entries (:func:`from_config` builds and
    checks them, so a bad one is a :class:`~vae_xai.validation.ConfigError` naming
    ``eval.<keyword>``). Maps ``"recon"``, the ``baselines`` (registered model-free kinds,
    :func:`~vae_xai.localization.maps.baseline_kinds`) and the anomaly attention
    ``attention[_kl]_<ref>_<layer>`` for each criterion x reference x layer, noise from
    ``jax.random.key(seed)``; metrics overall and per group; with ``figure_dir``, ``roc.png``
    and one ``overlay_<group>.png`` per group (``groups``, or normal/anomalous from
    ``labels``) showing the maps at ``overlay_layer`` (default: the first of ``layers``).

    Args:
      model, variables: the VAE and its variables (eval mode).
      train_images: normal images ``(N, H, W, C)`` for the empirical reference statistics.
      test_images, masks, labels, groups: the test set (see :class:`Context`).
      layers, references, criteria, baselines, sample, num_samples, batch_size, max_fpr,
        image_score, overlay_layer, overlays_per_group: the ``config.eval`` entries.
      dense_after: ``layer -> name of the dense layer after it`` or ``None``.
      seed: attention noise seed.
      figure_dir: where the figures go (none if ``None``), titled ``title``.
      likelihood, variance, beta: the model's training loss (for the maps of
        ``config.eval.maps``, which this keyword form does not select; see
        :func:`evaluate`).

    Returns:
      ``(results, maps)``: ``results = {"metrics": evaluate_maps(...), "latent_detection":
      latent_detection(...), "figures": [...], "eval_wall_s": float}``; ``maps`` the
      ``(N, H, W)`` maps by name.
    """
    producers, evaluators = from_config(
        dict(
            layers=tuple(layers),
            references=tuple(references),
            criteria=tuple(criteria),
            baselines=tuple(baselines),
            sample=sample,
            num_samples=num_samples,
            batch_size=batch_size,
            max_fpr=max_fpr,
            image_score=image_score,
            overlay_layer=overlay_layer,
            overlays_per_group=overlays_per_group,
        )
    )
    ctx = Context(
        model=model,
        variables=variables,
        train_images=train_images,
        test_images=test_images,
        masks=masks,
        labels=labels,
        groups=groups,
        dense_after=dense_after,
        seed=seed,
        batch_size=batch_size,
        figure_dir=figure_dir,
        title=title,
        likelihood=likelihood,
        variance=variance,
        beta=beta,
    )
    return evaluate(ctx, producers, evaluators)


def check_config(model: Any, config: Any, input_shape: Sequence[int]) -> None:
    """Validate a one-class experiment config (``seed``, ``train``, ``eval``) before any work.

    ``train`` holds keys of :data:`TRAIN_KEYS` (the ELBO and schedule) with
    ``num_steps >= 1`` and positive periods, batch size and learning rate. ``eval.layers``
    (and ``eval.attention_x_recon.layers``, if set) must be ``(B, h, w, c)`` feature maps of
    ``model.encode``, checked by a shape-only trace on inputs ``(1, *input_shape)``; the rest
    of ``eval`` is checked by building its producers and evaluators (:func:`from_config`),
    whose constructors check their own entries.

    Args:
      model: the VAE (Linen, with an ``encode`` method).
      config: the experiment config.
      input_shape: ``(H, W, C)`` of one input image.

    Raises:
      ConfigError: naming the bad field.
    """
    v = validation
    train_keys = set(TRAIN_KEYS)
    unknown = set(config.train.keys()) - train_keys
    if unknown:
        raise v.ConfigError("train", f"unknown keys {sorted(unknown)}; known: {sorted(train_keys)}")
    v.at_least(config, "train.num_steps", 1)
    v.positive(config, "train.learning_rate")
    v.at_least(config, "train.batch_size", 1)
    v.at_least(config, "train.checkpoint_every", 1)
    v.at_least(config, "train.log_every", 1)
    if "likelihood" in config.train:
        v.one_of(config, "train.likelihood", ("gaussian", "bernoulli"))
    e = config.eval
    v.non_empty(config, "eval.layers")
    v.model_layers(model, input_shape, tuple(e.layers), "eval.layers", train=False)
    axr_layers = (e.get("attention_x_recon") or {}).get("layers")
    if axr_layers:
        v.model_layers(
            model, input_shape, tuple(axr_layers), "eval.attention_x_recon.layers", train=False
        )
    from_config(_as_dict(e))


def _as_dict(section: Any) -> dict[str, Any]:
    return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def train_on_normal(
    model: Any,
    config: Any,
    *,
    workdir: str | pathlib.Path,
    train_images: ArrayLike,
    epoch_batches: EpochBatches,
    augment: AugmentFn | None = None,
    progress: bool = True,
) -> tuple[TrainState, train_lib.TrainInfo]:
    """Train (or resume) a one-class VAE on ``train_images`` in ``workdir``.

    Args:
      model: the VAE (``model.init`` on ``(1, H, W, C)``).
      config: an experiment config with ``seed`` and ``train`` (keys of :data:`TRAIN_KEYS`:
        Adam on the ELBO through :func:`vae_xai.train.train`), checked by
        :func:`check_config`.
      workdir: the run's folder (checkpoints, metrics).
      train_images: ``(N, H, W, C)`` normal images.
      epoch_batches: ``epoch_batches(train_images, batch_size, seed=seed)`` batches them
        (:data:`EpochBatches`; the core imports no data pipeline).
      augment: ``(key, images) -> images`` applied to each training batch, or ``None``.
      progress: show a progress bar.

    Returns:
      ``(state, train_info)`` from :func:`vae_xai.train.train`.
    """
    return _train(
        model,
        train_images,
        epoch_batches=epoch_batches,
        workdir=workdir,
        augment=augment,
        seed=config.seed,
        progress=progress,
        **_as_dict(config.train),
    )


def evaluate_test_set(
    model: Any,
    config: Any,
    state: TrainState,
    *,
    figure_dir: str | pathlib.Path,
    train_images: ArrayLike,
    test: Mapping[str, ArrayLike],
    dense_after: Callable[[str], str | None] = lambda layer: None,
    title: str | None = None,
) -> dict[str, Any]:
    """Produce the maps that ``config.eval`` selects on a test set and run its evaluators.

    Args:
      model, state: the trained VAE and its :class:`~vae_xai.train.TrainState`.
      config: the experiment config (``seed``, ``train`` for the loss the gradient maps
        differentiate, ``eval`` for the producers and evaluators, :func:`from_config`).
      figure_dir: where the evaluators' figures go (the evaluation's ``figures`` folder).
      train_images: the normal training images (empirical reference statistics, set-level
        ranges).
      test: ``"image"``, ``"mask"``, ``"label"`` and optionally ``"defect"`` (the per-image
        group for per-defect metrics).
      dense_after: ``layer -> name of the dense layer after it`` for the attention's encoder
        head (``None``: the model's default).
      title: figure title.

    Returns:
      The results of :func:`evaluate` (``metrics``, ``latent_detection``, ``figures``,
      ``map_cost``, ``eval_wall_s``).
    """
    eval_config = _as_dict(config.eval)
    producers, evaluators = from_config(eval_config)
    ctx = Context(
        model=model,
        variables=variables_of(state),
        train_images=train_images,
        test_images=test["image"],
        masks=test["mask"],
        labels=test["label"],
        groups=test.get("defect"),
        dense_after=dense_after,
        seed=config.seed,
        batch_size=eval_config.get("batch_size", 16),
        figure_dir=figure_dir,
        title=title,
        likelihood=config.train.get("likelihood", "gaussian"),
        variance=config.train.get("variance", 0.5),
        beta=config.train.get("beta", 1.0),
    )
    results, _ = evaluate(ctx, producers, evaluators)
    return results
