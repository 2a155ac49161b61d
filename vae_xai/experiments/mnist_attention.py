"""One-class MNIST: attention and anomaly attention of a VAE trained on one digit (paper Fig. 4).

(the library side of ``python -m experiments.mnist_attention``.)

For each training digit it trains (or resumes) a ConvVAE in ``workdir/digit_N``, then writes
``workdir/figure_digit_N.png`` (input, reconstruction, reconstruction error, attention of the
sampled z, anomaly attention with the prior and with empirical reference statistics, for test
images of other digits) and ``workdir/results.json``: one-class detection AUROC on the test set
(normal = the training digit) of four per-image scores (sum of squared reconstruction error and
the mean of each attention map), as a number to compare runs by. Both are links into the
evaluation's own folder ``workdir/evaluations/step<N>_<hash>/`` (see :mod:`vae_xai.workdir`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from data_pipelines import batching, mnist
from vae_xai import distributed, explain, plots, train, validation
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import template
from vae_xai.metrics import image_auroc
from vae_xai.models import ConvVAE, mnist_vae
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# evaluation fields and the checkpoint/log periods may differ; anything else is another run.
# train_digits only selects which per-digit models (workdir/digit_N) are trained and scored.
FIELDS = Fields(
    num_steps="train.num_steps",
    eval=("train_digits", "eval"),
    schedule=("train.checkpoint_every", "train.log_every"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Check every field that could fail later, before any work.

    Args:
      config: the experiment config.

    Raises:
      ConfigError: naming the first bad field.
    """
    validation.digits(config, "train_digits")
    figure_digits = config.eval.figure_digits
    for key in figure_digits.keys():
        if not (key.isdigit() and 0 <= int(key) <= 9):
            raise validation.ConfigError(
                "eval.figure_digits", f"keys are digits '0'..'9'; got {key!r}"
            )
        if len(figure_digits[key]):
            validation.digits(config, f"eval.figure_digits.{key}")
    validation.at_least(config, "model.latent_dim", 1)
    for field in ("batch_size", "num_steps", "checkpoint_every", "log_every"):
        validation.at_least(config, f"train.{field}", 1)
    for field in ("examples_per_digit", "batch_size", "max_images"):
        validation.at_least(config, f"eval.{field}", 1)
    validation.positive(config, "train.learning_rate")
    if config.train.beta < 0:
        raise validation.ConfigError("train.beta", f"must be >= 0; got {config.train.beta}")
    validation.model_layers(
        mnist_vae(config.model.latent_dim), (28, 28, 1), [config.eval.layer], "eval.layer"
    )


SCORES = ("recon_error", "attention", "anomaly_attention_prior", "anomaly_attention_empirical")


def train_digit(
    cfg: ml_collections.ConfigDict,
    train_images: np.ndarray,
    workdir: pathlib.Path,
    *,
    progress: bool = True,
) -> tuple[ConvVAE, train.TrainState]:
    """Train (or resume) one digit's ConvVAE on ``train_images`` in ``workdir``.

    Args:
      cfg: the experiment config.
      train_images: the digit's training images ``(N, 28, 28, 1)``.
      workdir: the digit's run folder.
      progress: show a progress bar.

    Returns:
      ``(model, state)``.
    """
    t = cfg.train
    model: ConvVAE = mnist_vae(cfg.model.latent_dim)
    batch_fn = batching.epoch_batch_fn({"image": train_images}, t.batch_size, seed=cfg.seed)
    optimizer = optax.adam(t.learning_rate)
    state, _ = train.train(
        train.init_state(model, optimizer, (28, 28, 1), key=jax.random.key(cfg.seed)),
        train.vae_update_fn(model, optimizer, beta=t.beta),
        batch_fn,
        workdir=workdir,
        num_steps=t.num_steps,
        seed=cfg.seed,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        progress=progress,
    )
    return model, state


def score_digit(
    cfg: ml_collections.ConfigDict,
    digit: int,
    model: ConvVAE,
    state: train.TrainState,
    train_images: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    out_dir: pathlib.Path,
) -> dict[str, Any]:
    """Score digit ``digit``'s model on the test set and draw its figure in ``out_dir``.

    Args:
      cfg: the experiment config.
      digit: the training (normal) digit.
      model: its VAE.
      state: its trained state.
      train_images: its training images (reference statistics).
      test_images: the test images.
      test_labels: their digit labels.
      out_dir: where the figure goes.

    Returns:
      ``{"digit", "test_auroc_normal_vs_other_digits", "num_test_images"[, "figure"]}``: the
      one-class detection AUROC (normal = ``digit``) of each per-image score of
      :data:`SCORES`.
    """
    e = cfg.eval
    variables = {"params": state.params}
    ref_mu, ref_var = explain.encode_statistics(model, variables, train_images)
    explain_jit = jax.jit(
        lambda x, key, rm, rv: explain.explain_batch(
            model, variables, x, key, layer=e.layer, ref_mu=rm, ref_var=rv
        )
    )

    def maps_for(images, key):
        prior = explain_jit(images, key, 0.0, 1.0)
        emp = explain_jit(images, key, ref_mu, ref_var)
        prior["anomaly_attention_empirical"] = emp["anomaly_attention"]
        prior["anomaly_attention_prior"] = prior.pop("anomaly_attention")
        return prior

    # per-image scores over the test set
    key = jax.random.fold_in(jax.random.key(cfg.seed), 10_000 + digit)
    n = min(e.max_images, len(test_images))
    bs = e.batch_size

    def scores_at(i: int) -> dict[str, np.ndarray]:
        batch = jnp.asarray(test_images[i : min(i + bs, n)])
        maps = maps_for(batch, jax.random.fold_in(key, i))
        out = {"recon_error": maps["recon_error"].sum((1, 2))}
        return {**out, **{s: maps[s].mean((1, 2)) for s in SCORES[1:]}}

    # the full batches split over processes (vae_xai.distributed; one process: in order),
    # the last, shorter one on every process
    full = distributed.map_batches(lambda b: scores_at(b * bs), n // bs)
    rest = [jax.device_get(scores_at(n - n % bs))] if n % bs else []
    per_image = {s: [np.asarray(o[s]) for o in full + rest] for s in SCORES}
    anomalous = (test_labels[:n] != digit).astype(np.int32)
    aurocs = {s: image_auroc(np.concatenate(v), anomalous) for s, v in per_image.items()}

    # the figure: a few test images of each figure digit
    rng = np.random.default_rng(cfg.seed)
    shown = []
    for d in e.figure_digits.get(str(digit), ()):
        idx = np.flatnonzero(test_labels == d)
        shown.extend(rng.choice(idx, e.examples_per_digit, replace=False).tolist())
    result = {"digit": digit, "test_auroc_normal_vs_other_digits": aurocs, "num_test_images": n}
    if shown:
        images = jnp.asarray(test_images[shown])
        maps = maps_for(images, jax.random.fold_in(key, 2**31 - 1))
        rows = {
            "input": list(images),
            "reconstruction": list(maps["recon"]),
            "recon. error": [
                plots.overlay(im, err) for im, err in zip(images, maps["recon_error"], strict=True)
            ],
            "attention": [
                plots.overlay(im, m) for im, m in zip(images, maps["attention"], strict=True)
            ],
            "anomaly att. (prior)": [
                plots.overlay(im, m)
                for im, m in zip(images, maps["anomaly_attention_prior"], strict=True)
            ],
            "anomaly att. (empirical)": [
                plots.overlay(im, m)
                for im, m in zip(images, maps["anomaly_attention_empirical"], strict=True)
            ],
        }
        fig = plots.save_image_rows(
            out_dir / f"figure_digit_{digit}.png",
            rows,
            col_titles=[f"digit {int(test_labels[i])}" for i in shown],
            title=f"VAE trained on digit {digit} ({cfg.train.num_steps} steps, layer {e.layer})",
        )
        result["figure"] = str(fig)
    logging.info("digit %d: %s", digit, aurocs)
    return result


NAME = "mnist_attention"


def inputs(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | pathlib.Path | None = None,
    source: str = "idx",
    progress: bool = True,
) -> template.Inputs:
    """The data identity, checked before any work.

    Args:
      config: the experiment config.
      data_dir: the MNIST folder.
      source: ``"idx"`` (the MNIST files in ``data_dir``, fingerprinted) or another source
        the loader knows (recorded by name).
      progress: show progress bars.

    Returns:
      The :class:`~vae_xai.experiments.template.Inputs`.

    Raises:
      FileNotFoundError: a missing MNIST file.
    """
    values = {"data_dir": data_dir, "source": source, "progress": progress}
    location = None if data_dir is None else str(pathlib.Path(data_dir).absolute())
    if source != "idx":
        return template.Inputs(
            data={"dataset": "MNIST", "source": source}, location=location, values=values
        )
    root = validation.existing_path(data_dir, "data_dir")
    files = []
    for stem in (f for pair in mnist.FILES.values() for f in pair):
        hits = [root / n for n in (stem + ".gz", stem) if (root / n).is_file()]
        if not hits:
            raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {root} (data_dir)")
        files.append(hits[0])
    data = {"dataset": "MNIST", "files": workdir_lib.fingerprint_files(root, files=files)}
    return template.Inputs(data=data, location=location, values=values)


def train_digits(
    config: ml_collections.ConfigDict, run: workdir_lib.Run, inputs: template.Inputs
) -> template.Trained:
    """Train (or resume) one model per training digit in ``workdir/digit_N``.

    Args:
      config: the experiment config.
      run: the run.
      inputs: the launcher's arguments (:func:`inputs`).

    Returns:
      The :class:`~vae_xai.experiments.template.Trained` of all digits.
    """
    v = inputs.values
    all_train, train_labels = mnist.load(v["data_dir"], "train", source=v["source"])
    models = {}
    for digit in config.train_digits:
        images = all_train[train_labels == digit]
        model, state = train_digit(
            config, images, run.workdir / f"digit_{digit}", progress=v["progress"]
        )
        models[int(digit)] = (model, state, images)
    return template.Trained(step=config.train.num_steps, model=models)


def evaluate(
    config: ml_collections.ConfigDict,
    run: workdir_lib.Run,
    trained: template.Trained,
    inputs: template.Inputs,
    evaluation: workdir_lib.Evaluation,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Score every digit's model and draw its figure (:func:`score_digit`).

    Args:
      config: the experiment config.
      run: the run.
      trained: the trained models.
      inputs: the launcher's arguments.
      evaluation: the evaluation folder.

    Returns:
      ``(result, extra)``: the seed's numbers and the top-level entries of its results.json.
    """
    v = inputs.values
    test_images, test_labels = mnist.load(v["data_dir"], "test", source=v["source"])
    digits = [
        score_digit(config, d, model, state, images, test_images, test_labels, evaluation.dir)
        for d, (model, state, images) in trained.model.items()
    ]
    return {"digits": digits}, {}


EXPERIMENT = template.Experiment(
    name=NAME,
    fields=FIELDS,
    validate=validate,
    inputs=inputs,
    train=train_digits,
    evaluate=evaluate,
)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path | None = None,
    source: str = "idx",
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and score one model per training digit (:func:`template.run`).

    ``config`` is ``experiments/configs/mnist_attention.py``'s; ``workdir``, ``seeds`` and the
    returned ``results.json`` are :func:`template.run`'s; ``progress`` shows progress bars.

    Args:
      data_dir: the folder of the four MNIST IDX files (``source="idx"``).
      source: ``"idx"`` (files in ``data_dir``) or ``"tfds"``.
    """
    return template.run(
        EXPERIMENT, config, workdir, seeds=seeds, data_dir=data_dir, source=source,
        progress=progress,
    )  # fmt: skip
