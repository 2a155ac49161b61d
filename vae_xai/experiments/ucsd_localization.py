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
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from data_pipelines import ucsd_ped1
from vae_xai import localization, validation
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import one_class, paper, template
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
    """The three-conv VAE of ``config.model``.

    Args:
      config: the experiment config.

    Returns:
      The model.
    """
    m = config.model
    return UCSDVAE(
        input_size=config.image_size,
        channels=tuple(m.channels),
        hidden=m.hidden,
        latent_dim=m.latent_dim,
    )


NAME = "ucsd_localization"


def validate(config: ml_collections.ConfigDict) -> None:
    """Check the config before any work (:func:`vae_xai.localization.check_config`).

    Args:
      config: the experiment config.

    Raises:
      ConfigError: naming the first bad field.
    """
    localization.check_config(build_model(config), config, (config.image_size,) * 2 + (1,))


def inputs(
    config: ml_collections.ConfigDict, *, data_dir: str | pathlib.Path, progress: bool = True
) -> template.Inputs:
    """The Ped1 folder and exactly the files the loaders read, fingerprinted before any work.

    Stray files, other clips and notes are not the data.

    Args:
      config: the experiment config.
      data_dir: the UCSD dataset folder.
      progress: show progress bars.

    Returns:
      The :class:`~vae_xai.experiments.template.Inputs`.

    Raises:
      FileNotFoundError: ``data_dir`` or its ``Train/``/``Test/`` folder is missing.
    """
    validation.existing_path(data_dir, "data_dir")
    ped1 = ucsd_ped1.resolve_ped1_dir(data_dir)
    for split in ("Train", "Test"):
        validation.existing_path(ped1 / split, f"data_dir ({split}/)")
    files = ucsd_ped1.data_files(ped1, pixel_gt_only=True)
    data = {
        "dataset": "UCSD Ped1",
        "files": {
            split: workdir_lib.fingerprint_files(ped1 / split, files=files[split])
            for split in ("Train", "Test")
        },
    }
    return template.Inputs(
        data=data,
        location=str(ped1.absolute()),
        values={"data_dir": data_dir, "progress": progress},
    )


def load(
    config: ml_collections.ConfigDict, run: workdir_lib.Run, inputs: template.Inputs
) -> one_class.Data:
    """Every training frame, and the test clips that have pixel masks.

    Args:
      config: the experiment config.
      run: the run (its workdir holds the decoded-data cache where there is one).
      inputs: the launcher's arguments (:func:`inputs`).

    Returns:
      The :class:`~vae_xai.experiments.one_class.Data` (train images, test set, facts, notes).
    """
    data_dir = inputs.values["data_dir"]
    size = (config.image_size, config.image_size)
    train = ucsd_ped1.load_train(data_dir, image_size=size)
    test = ucsd_ped1.load_test(data_dir, image_size=size, pixel_gt_only=True)
    facts = {
        "dataset": "UCSD Ped1",
        "num_train_frames": len(train["image"]),
        "num_test_frames": len(test["image"]),
        "test_clips": sorted(set(np.asarray(test["clip"]).tolist())),
    }
    notes = (
        " Pixel metrics pooled over every frame of the test clips with pixel masks; "
        "image_auroc is frame-level, from the frame labels."
    )
    return one_class.Data(
        train=train["image"],
        test={k: test[k] for k in ("image", "mask", "label")},
        facts=facts,
        notes=notes,
    )


EXPERIMENT = one_class.experiment(
    name=NAME,
    fields=FIELDS,
    validate=validate,
    inputs=inputs,
    load=load,
    build_model=build_model,
    title=lambda config, inputs: f"UCSD Ped1 ({config.variant})",
    dense_after=lambda config: dense_after,
    paper=lambda config, inputs: paper.for_experiment(NAME),
)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and evaluate on UCSD Ped1 (:func:`template.run`).

    ``config`` is ``experiments/configs/ucsd_localization.py``'s; ``workdir``, ``seeds`` and the
    returned ``results.json`` are :func:`template.run`'s; ``progress`` shows progress bars.

    Args:
      data_dir: the dataset folder (``UCSD_Anomaly_Dataset.v1p2``, ``UCSDped1`` or a folder
        holding either).
    """
    return template.run(
        EXPERIMENT, config, workdir, seeds=seeds, data_dir=data_dir, progress=progress
    )
