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
from collections.abc import Sequence
from typing import Any

import ml_collections

from data_pipelines import mvtec_ad
from data_pipelines.augment import augment_batch
from vae_xai import localization, validation
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import one_class, paper, template
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
    """The ResNet18-encoder VAE of ``config.model``.

    Args:
      config: the experiment config.

    Returns:
      The model.
    """
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


NAME = "mvtec_localization"


def validate(config: ml_collections.ConfigDict) -> None:
    """Check the config before any work (:func:`vae_xai.localization.check_config`).

    Args:
      config: the experiment config.

    Raises:
      ConfigError: naming the first bad field.
    """
    localization.check_config(build_model(config), config, (config.image_size,) * 2 + (3,))


def inputs(
    config: ml_collections.ConfigDict,
    *,
    category: str,
    data_dir: str | pathlib.Path,
    progress: bool = True,
) -> template.Inputs:
    """The category's files, listed and fingerprinted before any work.

    Args:
      config: the experiment config.
      category: the MVTec-AD category.
      data_dir: the folder of the categories.
      progress: show progress bars.

    Returns:
      The :class:`~vae_xai.experiments.template.Inputs`.

    Raises:
      FileNotFoundError / ValueError: ``data_dir`` or the category's split is missing or
        empty (the message names the path).
      ConfigError: ``train.batch_size`` exceeds the category's training images.
    """
    validation.existing_path(data_dir, "data_dir")
    cat_dir = mvtec_ad.resolve_category_dir(data_dir, category)
    n_train = len(mvtec_ad.list_split(data_dir, category, "train"))  # raises if empty
    mvtec_ad.list_split(data_dir, category, "test")
    if config.train.batch_size > n_train:
        raise validation.ConfigError(
            "train.batch_size",
            f"{config.train.batch_size} exceeds the {n_train} training images of {cat_dir}",
        )
    files = workdir_lib.fingerprint_files(
        cat_dir, suffixes=mvtec_ad.IMAGE_EXTENSIONS, ignore=mvtec_ad.IGNORED_NAMES
    )
    return template.Inputs(
        data={"dataset": "MVTec-AD", "category": category, "files": files},
        location=str(pathlib.Path(cat_dir).absolute()),
        values={"category": category, "data_dir": data_dir, "progress": progress},
    )


def load(
    config: ml_collections.ConfigDict, run: workdir_lib.Run, inputs: template.Inputs
) -> one_class.Data:
    """The category's train and test images (decoded once into ``cache_dir``).

    Args:
      config: the experiment config.
      run: the run (its workdir holds the decoded-data cache where there is one).
      inputs: the launcher's arguments (:func:`inputs`).

    Returns:
      The :class:`~vae_xai.experiments.one_class.Data` (train images, test set, facts, notes).
    """
    category, data_dir = inputs.values["category"], inputs.values["data_dir"]
    cache = config.cache_dir or str(run.workdir / "data_cache")
    load_split = functools.partial(
        mvtec_ad.load_split, data_dir, category, image_size=config.image_size, cache_dir=cache
    )
    train, test = load_split("train"), load_split("test")
    facts = {
        "category": category,
        "num_train_images": len(train["image"]),
        "num_test_images": len(test["image"]),
    }
    notes = (
        " Per-defect metrics use that defect's images plus all good test images; "
        "encoder trained from scratch (no pretrained weights)."
    )
    return one_class.Data(train=train["image"], test=test, facts=facts, notes=notes)


def augment(config: ml_collections.ConfigDict):
    """Random mirror + rotation of the training batches (``config.augment``).

    Args:
      config: the experiment config.

    Returns:
      ``(key, images) -> images``.
    """
    a = config.augment
    return functools.partial(
        augment_batch,
        hflip=a.hflip,
        vflip=a.vflip,
        max_rotation_deg=a.max_rotation_deg,
        right_angles=a.right_angles,
    )


EXPERIMENT = one_class.experiment(
    name=NAME,
    fields=FIELDS,
    validate=validate,
    inputs=inputs,
    load=load,
    build_model=build_model,
    title=lambda config, inputs: f"{inputs.values['category']} ({config.variant})",
    dense_after=lambda config: functools.partial(dense_after, head=config.model.head),
    augment=augment,
    paper=lambda config, inputs: paper.for_experiment(NAME, category=inputs.values["category"]),
)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    category: str,
    data_dir: str | pathlib.Path,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and evaluate on one MVTec-AD category (:func:`template.run`).

    ``config`` is ``experiments/configs/mvtec_localization.py``'s; ``workdir``, ``seeds`` and the
    returned ``results.json`` are :func:`template.run`'s; ``progress`` shows progress bars.

    Args:
      category: the MVTec-AD category (a folder of ``data_dir``).
      data_dir: the MVTec-AD root (or the category's folder).
    """
    return template.run(
        EXPERIMENT, config, workdir, seeds=seeds, category=category, data_dir=data_dir,
        progress=progress,
    )  # fmt: skip
