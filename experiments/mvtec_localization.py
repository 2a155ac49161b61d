"""MVTec-AD anomaly localization: attention vs reconstruction error (paper Table 2).

    python -m experiments.mvtec_localization --category=bottle \
        --data_dir=PATH/TO/mvtec_anomaly_detection --workdir=workdirs/mvtec_bottle \
        [--config=experiments/configs/mvtec_localization.py:small]

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
from typing import Any

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import mvtec_ad
from data_pipelines.augment import augment_batch
from experiments.configs.mvtec_localization import FIELDS
from experiments.paper import TABLE2_MVTEC as PAPER_TABLE2
from vae_xai import localization, validation
from vae_xai import workdir as workdir_lib
from vae_xai.models.resnet_vae import ResNetVAE, dense_after


def define_flags() -> None:
    """Define the command-line flags (only when run as a script, so that importing ``run``
    from several launchers in one process does not define the same flags twice)."""
    config_flags.DEFINE_config_file(
        "config",
        str(pathlib.Path(__file__).parent / "configs" / "mvtec_localization.py"),
        "ml_collections config file[:variant] (full | small | tiny).",
    )
    flags.DEFINE_string("category", None, "MVTec-AD category folder name, e.g. bottle.")
    flags.DEFINE_string(
        "data_dir",
        None,
        "Folder holding the MVTec-AD category folders (<data_dir>/<category>/...).",
    )
    flags.DEFINE_string("workdir", None, "Output folder (checkpoints, figures, JSON).")


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


def run(
    config: ml_collections.ConfigDict,
    *,
    category: str,
    data_dir: str | pathlib.Path,
    workdir: str | pathlib.Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train/resume, evaluate, write ``results.json`` and figures; returns the results.

    Before any work: the config is validated (:func:`vae_xai.localization.check_config`),
    the category's files are listed and fingerprinted, and the workdir's run record is
    checked (:func:`vae_xai.workdir.start`): another category, data or training config on a
    trained workdir is refused.
    """
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
    run_ = workdir_lib.start(
        workdir,
        config,
        experiment="mvtec_localization",
        fields=FIELDS,
        data={
            "dataset": "MVTec-AD",
            "category": category,
            "files": workdir_lib.fingerprint_files(cat_dir),
        },
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
        dense_after=functools.partial(dense_after, head=config.model.head),
        augment=augment,
        title=f"{category} ({config.variant})",
        progress=progress,
    )
    results = {
        "category": category,
        "config": config.to_dict(),
        "seed": config.seed,
        "device": str(jax.devices()[0]),
        "num_train_images": len(train["image"]),
        "num_test_images": len(test["image"]),
        "data_load_s": load_s,
        "train": train_info,
        **evaluation,
        "paper": PAPER_TABLE2.get(category),
        "notes": localization.RESULT_NAMES_NOTE
        + (
            " Per-defect metrics use that defect's images plus all good test images; "
            "encoder trained from scratch (no pretrained weights)."
        ),
    }
    return localization.save_results(record, results)


def main(argv: list[str]) -> None:
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.data_dir:
        raise app.UsageError(
            "--data_dir is required: the folder holding the MVTec-AD category folders "
            "(<data_dir>/<category>/train/good/*.png, see data_pipelines/mvtec_ad.py)"
        )
    if not FLAGS.category:
        raise app.UsageError(
            f"--category is required, e.g. --category=bottle (one of {mvtec_ad.MVTEC_CATEGORIES})"
        )
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required (checkpoints, results.json, figures)")
    results = run(
        FLAGS.config, category=FLAGS.category, data_dir=FLAGS.data_dir, workdir=FLAGS.workdir
    )
    localization.print_report(results, results["results_path"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
