"""UCSD Ped1 anomaly localization: reconstruction vs attention at conv1/2/3 (paper Table 1).

    python -m experiments.ucsd_localization --data_dir=PATH/TO/UCSD_Anomaly_Dataset.v1p2 \
        --workdir=workdirs/ucsd_ped1 [--config=experiments/configs/ucsd_localization.py:small]

Data (not downloaded by this code): the UCSD Anomaly Detection Dataset (Mahadevan et al.,
CVPR 2010), archive ``UCSD_Anomaly_Dataset.tar.gz`` from
http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm . Extract it and pass the
``UCSD_Anomaly_Dataset.v1p2`` folder (or ``UCSDped1``, or a folder holding either) as
``--data_dir``; the layout is ``UCSDped1/Train/TrainNNN/*.tif``,
``UCSDped1/Test/TestNNN/*.tif``, pixel masks ``UCSDped1/Test/TestNNN_gt/*.bmp`` and the frame
labels ``UCSDped1/Test/UCSDped1.m`` (see :mod:`data_pipelines.ucsd_ped1`).

Trains (or resumes) the three-conv VAE of :mod:`vae_xai.models.ucsd_vae` on every training
frame (100x100 grayscale, all normal), then on the test clips that have pixel masks computes
the reconstruction-error map and the anomaly-attention map at conv1, conv2 and conv3 (prior
and empirical reference statistics), upsampled to 100x100, and reports pooled pixel AUROC
(the Table 1 metric), best IoU, AUPRO and frame-level AUROC to ``workdir/results.json``, with
ROC curves and overlays (normal / anomalous frames) in ``workdir/figures/`` (links into the
evaluation's own folder ``workdir/evaluations/step<N>_<hash>/``; see :mod:`vae_xai.workdir`).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import ucsd_ped1
from experiments.configs.ucsd_localization import FIELDS
from experiments.paper import TABLE1_UCSD_PED1_PIXEL_AUROC as PAPER_TABLE1
from vae_xai import localization, validation
from vae_xai import workdir as workdir_lib
from vae_xai.models.ucsd_vae import UCSDVAE, dense_after


def define_flags() -> None:
    """Define the command-line flags (only when run as a script, so that importing ``run``
    from several launchers in one process does not define the same flags twice)."""
    config_flags.DEFINE_config_file(
        "config",
        str(pathlib.Path(__file__).parent / "configs" / "ucsd_localization.py"),
        "ml_collections config file[:variant] (full | small | tiny).",
    )
    flags.DEFINE_string(
        "data_dir", None, "UCSD_Anomaly_Dataset.v1p2 folder (or UCSDped1, or a folder holding it)."
    )
    flags.DEFINE_string("workdir", None, "Output folder (checkpoints, figures, JSON).")


def build_model(config: ml_collections.ConfigDict) -> UCSDVAE:
    m = config.model
    return UCSDVAE(
        input_size=config.image_size,
        channels=tuple(m.channels),
        hidden=m.hidden,
        latent_dim=m.latent_dim,
    )


def run(
    config: ml_collections.ConfigDict,
    *,
    data_dir: str | pathlib.Path,
    workdir: str | pathlib.Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Train/resume, evaluate, write ``results.json`` and figures; returns the results.

    The config, the data folder and the workdir's run record are checked before any work
    (see :func:`experiments.mvtec_localization.run`).
    """
    model = build_model(config)
    localization.check_config(model, config, (config.image_size, config.image_size, 1))
    validation.existing_path(data_dir, "data_dir")
    ped1 = ucsd_ped1.resolve_ped1_dir(data_dir)
    for split in ("Train", "Test"):
        validation.existing_path(ped1 / split, f"data_dir ({split}/)")
    run_ = workdir_lib.start(
        workdir,
        config,
        experiment="ucsd_localization",
        fields=FIELDS,
        data={
            "dataset": "UCSD Ped1",
            "files": {
                split: workdir_lib.fingerprint_files(ped1 / split) for split in ("Train", "Test")
            },
        },
        data_location=str(ped1.absolute()),
    )
    t0 = time.perf_counter()
    size = (config.image_size, config.image_size)
    train = ucsd_ped1.load_train(data_dir, image_size=size)
    test = ucsd_ped1.load_test(data_dir, image_size=size, pixel_gt_only=True)
    load_s = time.perf_counter() - t0

    train_info, evaluation, record = localization.train_and_evaluate(
        model,
        config,
        run=run_,
        train_images=train["image"],
        test={k: test[k] for k in ("image", "mask", "label")},
        dense_after=dense_after,
        title=f"UCSD Ped1 ({config.variant})",
        progress=progress,
    )
    results = {
        "dataset": "UCSD Ped1",
        "config": config.to_dict(),
        "seed": config.seed,
        "device": str(jax.devices()[0]),
        "num_train_frames": len(train["image"]),
        "num_test_frames": len(test["image"]),
        "test_clips": sorted(set(np.asarray(test["clip"]).tolist())),
        "data_load_s": load_s,
        "train": train_info,
        **evaluation,
        "paper_pixel_auroc": PAPER_TABLE1,
        "notes": localization.RESULT_NAMES_NOTE
        + (
            " Pixel metrics pooled over every frame of the test clips with pixel masks; "
            "image_auroc is frame-level, from the frame labels."
        ),
    }
    return localization.save_results(record, results)


def main(argv: list[str]) -> None:
    FLAGS = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.data_dir:
        raise app.UsageError(
            "--data_dir is required: the extracted UCSD_Anomaly_Dataset.v1p2 folder "
            "(download: http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm)"
        )
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required (checkpoints, results.json, figures)")
    results = run(FLAGS.config, data_dir=FLAGS.data_dir, workdir=FLAGS.workdir)
    localization.print_report(results, results["results_path"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
