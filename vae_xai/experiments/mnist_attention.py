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
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.metrics import image_auroc
from vae_xai.models import ConvVAE, mnist_vae
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# evaluation fields and the checkpoint/log periods may differ; anything else is another run.
# train_digits only selects which per-digit models (workdir/digit_N) are trained and scored.
FIELDS = Fields(
    num_steps="num_steps",
    eval=(
        "train_digits",
        "figure_digits",
        "examples_per_digit",
        "layer",
        "eval_batch_size",
        "max_eval_images",
    ),
    schedule=("checkpoint_every", "log_every"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Every field that could fail later, checked before any work (names the field)."""
    validation.digits(config, "train_digits")
    for key in config.figure_digits.keys():
        if not (key.isdigit() and 0 <= int(key) <= 9):
            raise validation.ConfigError("figure_digits", f"keys are digits '0'..'9'; got {key!r}")
        if len(config.figure_digits[key]):
            validation.digits(config, f"figure_digits.{key}")
    for field in ("latent_dim", "batch_size", "num_steps", "checkpoint_every", "log_every"):
        validation.at_least(config, field, 1)
    for field in ("examples_per_digit", "eval_batch_size", "max_eval_images"):
        validation.at_least(config, field, 1)
    validation.positive(config, "learning_rate")
    if config.beta < 0:
        raise validation.ConfigError("beta", f"must be >= 0; got {config.beta}")
    validation.model_layers(mnist_vae(config.latent_dim), (28, 28, 1), [config.layer], "layer")


SCORES = ("recon_error", "attention", "anomaly_attention_prior", "anomaly_attention_empirical")


def run_digit(
    cfg,
    digit: int,
    train_images,
    test_images,
    test_labels,
    workdir: pathlib.Path,
    out_dir: pathlib.Path,
    *,
    progress: bool = True,
):
    """Train (or resume) digit ``digit``'s model in ``workdir``, score it, draw its figure in
    ``out_dir`` (the evaluation's folder)."""
    model: ConvVAE = mnist_vae(cfg.latent_dim)

    batch_fn = batching.epoch_batch_fn({"image": train_images}, cfg.batch_size, seed=cfg.seed)
    optimizer = optax.adam(cfg.learning_rate)
    state, _ = train.train(
        train.init_state(model, optimizer, (28, 28, 1), key=jax.random.key(cfg.seed)),
        train.vae_update_fn(model, optimizer, beta=cfg.beta),
        batch_fn,
        workdir=workdir,
        num_steps=cfg.num_steps,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        progress=progress,
    )
    variables = {"params": state.params}
    ref_mu, ref_var = explain.encode_statistics(model, variables, train_images)
    explain_jit = jax.jit(
        lambda x, key, rm, rv: explain.explain_batch(
            model, variables, x, key, layer=cfg.layer, ref_mu=rm, ref_var=rv
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
    n = min(cfg.max_eval_images, len(test_images))
    bs = cfg.eval_batch_size

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
    for d in cfg.figure_digits.get(str(digit), ()):
        idx = np.flatnonzero(test_labels == d)
        shown.extend(rng.choice(idx, cfg.examples_per_digit, replace=False).tolist())
    result = {"digit": digit, "test_auroc_normal_vs_other_digits": aurocs, "num_test_images": n}
    if shown:
        images = jnp.asarray(test_images[shown])
        maps = maps_for(images, jax.random.fold_in(key, 2**31 - 1))
        rows = {
            "input": list(images),
            "reconstruction": list(maps["recon"]),
            "recon. error": [
                plots.overlay(im, e) for im, e in zip(images, maps["recon_error"], strict=True)
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
            title=f"VAE trained on digit {digit} ({cfg.num_steps} steps, layer {cfg.layer})",
        )
        result["figure"] = str(fig)
    logging.info("digit %d: %s", digit, aurocs)
    return result


EXPERIMENT = "mnist_attention"


def _data_identity(data_dir, source: str) -> dict[str, Any]:
    """The data identity (checked before any work: a missing IDX file is an error)."""
    if source != "idx":
        return {"dataset": "MNIST", "source": source}
    root = validation.existing_path(data_dir, "data_dir")
    files = []
    for stem in (f for pair in mnist.FILES.values() for f in pair):
        hits = [root / n for n in (stem + ".gz", stem) if (root / n).is_file()]
        if not hits:
            raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {root} (data_dir)")
        files.append(hits[0])
    return {"dataset": "MNIST", "files": workdir_lib.fingerprint_files(root, files=files)}


def train_and_evaluate(
    cfg: Any,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path | None = None,
    source: str = "idx",
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate, check the workdir's run record, then train and score every training digit;
    writes this evaluation's ``results.json`` (the results schema) and figures and returns
    what was written. ``seeds``: each seed one run in ``workdir/seed_N``, aggregated
    (:mod:`vae_xai.seeds`); ``None``: ``cfg.seed`` in ``workdir``."""
    validate(cfg)
    data = _data_identity(data_dir, source)

    def one(c: Any, wd: str | pathlib.Path) -> dict[str, Any]:
        return _train_and_evaluate_one(
            c, wd, data=data, data_dir=data_dir, source=source, progress=progress
        )

    if seeds is None:
        return one(cfg, workdir)
    return seeds_lib.run_seeds(workdir, cfg, seeds, one, experiment=EXPERIMENT, fields=FIELDS)


def _train_and_evaluate_one(
    cfg: Any,
    workdir: str | pathlib.Path,
    *,
    data: dict[str, Any],
    data_dir: str | pathlib.Path | None,
    source: str,
    progress: bool,
) -> dict[str, Any]:
    run_ = workdir_lib.start(
        workdir,
        cfg,
        experiment=EXPERIMENT,
        fields=FIELDS,
        data=data,
        data_location=None if data_dir is None else str(pathlib.Path(data_dir).absolute()),
    )
    evaluation = run_.evaluation(run_.eval_config(cfg), step=cfg.num_steps)
    all_train, train_labels = mnist.load(data_dir, "train", source=source)
    test_images, test_labels = mnist.load(data_dir, "test", source=source)
    results: dict[str, Any] = {"digits": []}
    for digit in cfg.train_digits:
        train_images = all_train[train_labels == digit]
        results["digits"].append(
            run_digit(
                cfg,
                int(digit),
                train_images,
                test_images,
                test_labels,
                run_.workdir / f"digit_{digit}",
                evaluation.dir,
                progress=progress,
            )
        )
    return evaluation.save_results(results)
