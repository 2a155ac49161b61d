"""MVTec-AD anomaly localization: attention vs reconstruction error (paper Table 2).

(the library side of ``python -m experiments.mvtec_localization``; see that launcher.)

Trains (or resumes, from ``workdir/checkpoints``) a ResNet18-encoder VAE on
``<category>/train/good`` with random mirror + rotation, then on the test set computes the
reconstruction-error map (the "vanilla VAE" baseline) and the anomaly-attention map (Eq. 5)
at each ``config.eval.layers`` with the prior and the empirical reference statistics,
upsampled to the mask size (= ``config.image_size``). Writes ``workdir/results.json``
(pixel AUROC, best IoU, AUPRO, image AUROC per map type, overall and per defect type; the
training info; the paper's numbers for the category where known) and PNGs in
``workdir/figures/`` (pooled ROC curves; input / mask / reconstruction error / attention
overlays per defect type), both in the evaluation's own folder
``workdir/evaluations/step<N>_<hash>/`` and linked from the workdir (see
:mod:`vae_xai.workdir`: one run per workdir). The dataset is read from files you already have (see
:mod:`data_pipelines.mvtec_ad` for the layout and the download address).
"""

from __future__ import annotations

import functools
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import ml_collections

from data_pipelines import mvtec_ad
from data_pipelines.augment import augment_batch
from vae_xai import localization, validation
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import paper
from vae_xai.experiments.one_class import epoch_batch_fn
from vae_xai.models.resnet_vae import ResNetVAE, dense_after
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# evaluation-only fields and the checkpoint/log periods may differ; anything else is another run.
FIELDS = Fields(
    num_steps="train.num_steps",
    eval=("eval",),
    schedule=("train.checkpoint_every", "train.log_every", "cache_dir"),
)


def build_model(config: ml_collections.ConfigDict) -> ResNetVAE:
    m = config.model
    return ResNetVAE(
        image_size=config.image_size,
        in_channels=3,
        width=m.width,
        stage_sizes=tuple(m.stage_sizes),
        latent_dim=m.latent_dim,
        head=m.head,
        bn_momentum=m.bn_momentum,
        padding=m.get("padding", "zeros"),
    )


EXPERIMENT = "mvtec_localization"


def _precheck(config: ml_collections.ConfigDict, *, category: str, data_dir) -> pathlib.Path:
    """The config and the category's files, checked before any work; returns its folder."""
    model = build_model(config)
    localization.check_config(model, config, (config.image_size, config.image_size, 3))
    validation.existing_path(data_dir, "data_dir")
    cat_dir = mvtec_ad.resolve_category_dir(data_dir, category)
    n_train = len(mvtec_ad.list_split(data_dir, category, "train"))  # raises if empty
    mvtec_ad.list_split(data_dir, category, "test")
    if config.train.batch_size > n_train:
        raise validation.ConfigError(
            "train.batch_size",
            f"{config.train.batch_size} exceeds the {n_train} training images of {cat_dir}",
        )
    return cat_dir


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    category: str,
    data_dir: str | pathlib.Path,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train/resume, evaluate, write ``results.json`` (the results schema) and figures;
    returns what was written.

    Before any work: the config is validated (:func:`vae_xai.localization.check_config`),
    the category's files are listed and fingerprinted, and the workdir's run record is
    checked (:func:`vae_xai.workdir.start`): another category, data or training config on a
    trained workdir is refused. ``seeds``: each seed one run in ``workdir/seed_N``,
    aggregated (:mod:`vae_xai.seeds`); ``None``: ``config.seed`` in ``workdir``.
    """
    cat_dir = _precheck(config, category=category, data_dir=data_dir)
    data = {
        "dataset": "MVTec-AD",
        "category": category,
        "files": workdir_lib.fingerprint_files(
            cat_dir, suffixes=mvtec_ad.IMAGE_EXTENSIONS, ignore=mvtec_ad.IGNORED_NAMES
        ),
    }

    def one(cfg: ml_collections.ConfigDict, wd: str | pathlib.Path) -> dict[str, Any]:
        return _train_and_evaluate_one(
            cfg, wd, category=category, data_dir=data_dir, cat_dir=cat_dir, data=data,
            progress=progress,
        )  # fmt: skip

    if seeds is None:
        return one(config, workdir)
    return seeds_lib.run_seeds(workdir, config, seeds, one, experiment=EXPERIMENT, fields=FIELDS)


def _train_and_evaluate_one(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    category: str,
    data_dir: str | pathlib.Path,
    cat_dir: pathlib.Path,
    data: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    model = build_model(config)
    run_ = workdir_lib.start(
        workdir,
        config,
        experiment=EXPERIMENT,
        fields=FIELDS,
        data=data,
        data_location=str(pathlib.Path(cat_dir).absolute()),
    )
    workdir = run_.workdir
    cache = config.cache_dir or str(workdir / "data_cache")
    load = functools.partial(
        mvtec_ad.load_split, data_dir, category, image_size=config.image_size, cache_dir=cache
    )
    t0 = time.perf_counter()
    train, test = load("train"), load("test")
    load_s = time.perf_counter() - t0

    a = config.augment
    augment = functools.partial(
        augment_batch,
        hflip=a.hflip,
        vflip=a.vflip,
        max_rotation_deg=a.max_rotation_deg,
        right_angles=a.right_angles,
    )
    train_info, evaluation, record = localization.train_and_evaluate(
        model,
        config,
        run=run_,
        train_images=train["image"],
        test=test,
        epoch_batches=epoch_batch_fn,
        dense_after=functools.partial(dense_after, head=config.model.head),
        augment=augment,
        title=f"{category} ({config.variant})",
        progress=progress,
    )
    results = {
        "category": category,
        "num_train_images": len(train["image"]),
        "num_test_images": len(test["image"]),
        "data_load_s": load_s,
        "train": train_info,
        **evaluation,
    }
    notes = localization.RESULT_NAMES_NOTE + (
        " Per-defect metrics use that defect's images plus all good test images; "
        "encoder trained from scratch (no pretrained weights)."
    )
    extra = {"paper": paper.for_experiment(EXPERIMENT, category=category), "notes": notes}
    return record.save_results(results, extra=extra)
