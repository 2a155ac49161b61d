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
overlays per defect type). The dataset is read from files you already have (see
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
from experiments.configs.mvtec_localization import PAPER_TABLE2
from vae_xai import localization
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
    """Train/resume, evaluate, write ``results.json`` and figures; returns the results."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = config.cache_dir or str(workdir / "data_cache")
    load = functools.partial(
        mvtec_ad.load_split, data_dir, category, image_size=config.image_size, cache_dir=cache
    )
    t0 = time.perf_counter()
    train, test = load("train"), load("test")
    load_s = time.perf_counter() - t0

    model = build_model(config)
    a = config.augment
    augment = functools.partial(
        augment_batch,
        hflip=a.hflip,
        vflip=a.vflip,
        max_rotation_deg=a.max_rotation_deg,
        right_angles=a.right_angles,
    )
    train_info, evaluation = localization.train_and_evaluate(
        model,
        config,
        train_images=train["image"],
        test=test,
        workdir=workdir,
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
    localization.save_results(workdir, results)
    return results


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
    localization.print_report(results, FLAGS.workdir)


if __name__ == "__main__":
    define_flags()
    app.run(main)
