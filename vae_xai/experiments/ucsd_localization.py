"""UCSD Ped1 anomaly localization: reconstruction vs attention at conv1/2/3 (paper Table 1).

(the library side of ``python -m experiments.ucsd_localization``; see that launcher.)

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
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np

from data_pipelines import ucsd_ped1
from vae_xai import localization, validation
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import paper
from vae_xai.experiments.one_class import epoch_batch_fn
from vae_xai.models.ucsd_vae import UCSDVAE, dense_after
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# evaluation-only fields and the checkpoint/log periods may differ; anything else is another run.
FIELDS = Fields(
    num_steps="train.num_steps",
    eval=("eval",),
    schedule=("train.checkpoint_every", "train.log_every"),
)


def build_model(config: ml_collections.ConfigDict) -> UCSDVAE:
    m = config.model
    return UCSDVAE(
        input_size=config.image_size,
        channels=tuple(m.channels),
        hidden=m.hidden,
        latent_dim=m.latent_dim,
    )


EXPERIMENT = "ucsd_localization"


def _precheck(config: ml_collections.ConfigDict, data_dir) -> pathlib.Path:
    """The config and the data folder, checked before any work; returns the Ped1 folder."""
    model = build_model(config)
    localization.check_config(model, config, (config.image_size, config.image_size, 1))
    validation.existing_path(data_dir, "data_dir")
    ped1 = ucsd_ped1.resolve_ped1_dir(data_dir)
    for split in ("Train", "Test"):
        validation.existing_path(ped1 / split, f"data_dir ({split}/)")
    return ped1


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train/resume, evaluate, write ``results.json`` (the results schema) and figures;
    returns what was written.

    The config, the data folder and the workdir's run record are checked before any work
    (see :func:`vae_xai.experiments.mvtec_localization.train_and_evaluate`); ``seeds`` as
    there.
    """
    ped1 = _precheck(config, data_dir)
    # exactly the files the loaders read (stray files, other clips, notes are not the data)
    files = ucsd_ped1.data_files(ped1, pixel_gt_only=True)
    data = {
        "dataset": "UCSD Ped1",
        "files": {
            split: workdir_lib.fingerprint_files(ped1 / split, files=files[split])
            for split in ("Train", "Test")
        },
    }

    def legacy_data() -> dict[str, Any]:  # every file under Train/Test (runs before 21a)
        return {
            "dataset": "UCSD Ped1",
            "files": {
                split: workdir_lib.fingerprint_files(ped1 / split) for split in ("Train", "Test")
            },
        }

    def one(cfg: ml_collections.ConfigDict, wd: str | pathlib.Path) -> dict[str, Any]:
        return _train_and_evaluate_one(
            cfg,
            wd,
            data_dir=data_dir,
            ped1=ped1,
            data=data,
            progress=progress,
            legacy_data=legacy_data,
        )

    if seeds is None:
        return one(config, workdir)
    return seeds_lib.run_seeds(workdir, config, seeds, one, experiment=EXPERIMENT, fields=FIELDS)


def _train_and_evaluate_one(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path,
    ped1: pathlib.Path,
    data: dict[str, Any],
    progress: bool,
    legacy_data: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    model = build_model(config)
    run_ = workdir_lib.start(
        workdir,
        config,
        experiment=EXPERIMENT,
        fields=FIELDS,
        data=data,
        data_location=str(ped1.absolute()),
        legacy_data=legacy_data,
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
        epoch_batches=epoch_batch_fn,
        dense_after=dense_after,
        title=f"UCSD Ped1 ({config.variant})",
        progress=progress,
    )
    results = {
        "dataset": "UCSD Ped1",
        "num_train_frames": len(train["image"]),
        "num_test_frames": len(test["image"]),
        "test_clips": sorted(set(np.asarray(test["clip"]).tolist())),
        "data_load_s": load_s,
        "train": train_info,
        **evaluation,
    }
    notes = localization.RESULT_NAMES_NOTE + (
        " Pixel metrics pooled over every frame of the test clips with pixel masks; "
        "image_auroc is frame-level, from the frame labels."
    )
    extra = {"paper": paper.for_experiment(EXPERIMENT), "notes": notes}
    return record.save_results(results, extra=extra)
