"""MNIST with synthetic anomalies: a positive control for anomaly localization.

(the library side of ``python -m experiments.mnist_localization``; see that launcher.)

On MVTec-AD the anomaly-attention maps do not localize, and the encoder's latents barely tell
defective images from good ones. This experiment measures the same maps where the ground truth
is exact: it trains (or resumes, from ``workdir/checkpoints``) the paper's one-class MNIST VAE
on the training images of ``config.normal_digit`` (no augmentation), takes the first
``anomaly.max_test_images`` test images of that digit, splits them into one disjoint chunk per
anomaly kind (``"square"``: a filled 7x7 square of ink; ``"erase"``: a 7x7 square set to 0;
:func:`data_pipelines.synthetic_anomaly.paste_squares`), and pastes that kind into
``anomaly.fraction`` of its chunk (seed ``config.seed + k`` for the ``k``-th kind). The
untouched images of every chunk are the "good" test images, each appearing once. It then scores
the reconstruction-error map, the model-free centre and intensity maps and the anomaly
attention (Eq. 5, and the per-latent KL score) at conv1/conv2 with the prior and the empirical
reference, exactly as :mod:`experiments.mvtec_localization` does: pooled pixel AUROC, best IoU,
AUPRO and image AUROC, overall and per anomaly kind (a kind's images plus all good ones).

Writes ``workdir/results.json`` and ``workdir/figures/`` (pooled ROC curves; overlays per
kind) and prints the summary table. Data: the four MNIST IDX files
(see :mod:`data_pipelines.mnist`); nothing is downloaded.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from data_pipelines import mnist
from data_pipelines.synthetic_anomaly import KINDS, paste_squares
from vae_xai import localization, validation
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import one_class, template
from vae_xai.models.conv_vae import mnist_vae
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# evaluation-only fields and the checkpoint/log periods may differ; anything else is another run.
FIELDS = Fields(
    num_steps="train.num_steps",
    eval=("eval", "anomaly"),
    schedule=("train.checkpoint_every", "train.log_every"),
)


def dense_after(layer: str) -> str | None:
    """The Dense that consumes ``flatten(layer)`` in the MNIST ConvVAE (attention fast path).

    Args:
      layer: an encoder layer.

    Returns:
      ``"fc1"`` for ``conv2``, else ``None``.
    """
    return "fc1" if layer == "conv2" else None


def mnist_files(data_dir: str | pathlib.Path | None) -> list[pathlib.Path]:
    """The four MNIST IDX files in ``data_dir`` (each ``NAME`` or ``NAME.gz``).

    Checked before any work.

    Args:
      data_dir: the MNIST folder.

    Returns:
      Their paths.

    Raises:
      FileNotFoundError: naming the missing file.
    """
    root = validation.existing_path(data_dir, "data_dir")
    found = []
    for stem in (f for pair in mnist.FILES.values() for f in pair):
        hits = [root / n for n in (stem + ".gz", stem) if (root / n).is_file()]
        if not hits:
            raise FileNotFoundError(
                f"MNIST file {stem}[.gz] not found in {root} (data_dir; see "
                "data_pipelines/mnist.py)"
            )
        found.append(hits[0])
    return found


def synthetic_test_set(
    clean: np.ndarray, anomaly: ml_collections.ConfigDict, *, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """The test set: ``clean`` split into one disjoint chunk per kind, one kind pasted in each.

    Args:
      clean: clean test images of the normal digit ``(N, 28, 28, 1)``.
      anomaly: ``config.anomaly`` (kinds, fraction, size, margin).
      seed: the seed of the pasting.

    Returns:
      ``({"image", "mask", "label", "defect"}, stats)``; ``stats[kind]`` counts the chunk's
      images and anomalies, the mean mask size, and the anomalous images whose square changed
      nothing (empty mask: a square pasted over ink, or an erase over background).

    Raises:
      ValueError: empty or repeated kinds, or too few images to split.
    """
    kinds = tuple(anomaly.kinds)
    if not kinds or len(set(kinds)) != len(kinds):
        raise ValueError(f"anomaly.kinds must be non-empty and distinct; got {kinds}")
    if len(clean) < len(kinds):
        raise ValueError(f"{len(clean)} clean test images cannot be split among kinds {kinds}")
    parts, stats = [], {}
    for k, (kind, chunk) in enumerate(zip(kinds, np.array_split(clean, len(kinds)), strict=True)):
        out = paste_squares(
            chunk,
            fraction=anomaly.fraction,
            size=anomaly.size,
            margin=anomaly.margin,
            kind=kind,
            seed=seed + k,
        )
        parts.append(out)
        anomalous = out["label"] == 1
        mask_pixels = out["mask"][anomalous].sum((1, 2))
        stats[kind] = {
            "num_images": len(chunk),
            "num_anomalous": int(anomalous.sum()),
            "mean_mask_pixels": float(mask_pixels.mean()) if anomalous.any() else None,
            "num_anomalous_with_empty_mask": int((mask_pixels == 0).sum()),
        }
    test = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return test, stats


NAME = "mnist_localization"


def validate(config: ml_collections.ConfigDict) -> None:
    """Check every field that could fail later, before any work.

    Args:
      config: the experiment config.

    Raises:
      ConfigError: naming the first bad field.
    """
    validation.digits(config, "normal_digit")
    if not isinstance(config.normal_digit, int):
        raise validation.ConfigError(
            "normal_digit", f"must be one digit; got {config.normal_digit!r}"
        )
    validation.at_least(config, "model.latent_dim", 1)
    validation.subset(config, "anomaly.kinds", KINDS)
    if len(set(config.anomaly.kinds)) != len(config.anomaly.kinds):
        raise validation.ConfigError(
            "anomaly.kinds", f"must be distinct; got {config.anomaly.kinds}"
        )
    validation.at_least(config, "anomaly.size", 1)
    validation.at_least(config, "anomaly.margin", 0)
    validation.at_least(config, "anomaly.max_test_images", len(config.anomaly.kinds))
    if not 0 <= config.anomaly.fraction <= 1:
        raise validation.ConfigError(
            "anomaly.fraction", f"must be in [0, 1]; got {config.anomaly.fraction}"
        )
    localization.check_config(mnist_vae(config.model.latent_dim), config, (28, 28, 1))


def inputs(
    config: ml_collections.ConfigDict, *, data_dir: str | pathlib.Path, progress: bool = True
) -> template.Inputs:
    """The four MNIST files, found and fingerprinted before any work.

    Args:
      config: the experiment config.
      data_dir: the MNIST folder.
      progress: show progress bars.

    Returns:
      The :class:`~vae_xai.experiments.template.Inputs`.
    """
    files = mnist_files(data_dir)
    return template.Inputs(
        data={"dataset": "MNIST", "files": workdir_lib.fingerprint_files(data_dir, files=files)},
        location=str(pathlib.Path(data_dir).absolute()),
        values={"data_dir": data_dir, "progress": progress},
    )


def load(
    config: ml_collections.ConfigDict, run: workdir_lib.Run, inputs: template.Inputs
) -> one_class.Data:
    """The normal digit's training images and the synthetic test set built from its
    test images (:func:`synthetic_test_set`).

    Args:
      config: the experiment config.
      run: the run (its workdir holds the decoded-data cache where there is one).
      inputs: the launcher's arguments (:func:`inputs`).

    Returns:
      The :class:`~vae_xai.experiments.one_class.Data` (train images, test set, facts, notes).
    """
    data_dir = inputs.values["data_dir"]
    digit = int(config.normal_digit)
    train_images, _ = mnist.load_one_class(data_dir, "train", digit)
    test_images, _ = mnist.load_one_class(data_dir, "test", digit)
    if len(train_images) == 0 or len(test_images) == 0:
        raise ValueError(
            f"{data_dir} has {len(train_images)} training and {len(test_images)} test images "
            f"of digit {digit}; need both"
        )
    clean = test_images[: config.anomaly.max_test_images]
    test, anomaly_stats = synthetic_test_set(clean, config.anomaly, seed=config.seed)
    facts = {
        "dataset": "MNIST, synthetic anomalies",
        "normal_digit": digit,
        "num_train_images": len(train_images),
        "num_test_images": len(test["image"]),
        "num_anomalous_test_images": int(test["label"].sum()),
        "anomalies": anomaly_stats,
    }
    a = config.anomaly
    notes = (
        f" Test set: the first {len(clean)} MNIST test images of digit {digit}, split into "
        f"one disjoint chunk per kind {tuple(a.kinds)}; in {a.fraction:g} of each chunk a "
        f"{a.size}x{a.size} square at least {a.margin} px inside the border is set to 1 "
        "(square: added ink, placed uniformly) or 0 (erase: removed ink, centred on an ink "
        "pixel); the mask is the pixels the square changed by more than 0.25; the rest of "
        "each chunk are the good images. Per-defect metrics use that kind's images plus all "
        "good images."
    )
    return one_class.Data(train=train_images, test=test, facts=facts, notes=notes)


EXPERIMENT = one_class.experiment(
    name=NAME,
    fields=FIELDS,
    validate=validate,
    inputs=inputs,
    load=load,
    build_model=lambda config: mnist_vae(config.model.latent_dim),
    title=lambda c, inputs: f"MNIST {int(c.normal_digit)} + synthetic anomalies ({c.variant})",
    dense_after=lambda config: dense_after,
)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and evaluate the MNIST localization control (:func:`template.run`).

    ``config`` is ``experiments/configs/mnist_localization.py``'s; ``workdir``, ``seeds`` and the
    returned ``results.json`` are :func:`template.run`'s; ``progress`` shows progress bars.

    Args:
      data_dir: the folder of the four MNIST IDX files (``NAME`` or ``NAME.gz``).
    """
    return template.run(
        EXPERIMENT, config, workdir, seeds=seeds, data_dir=data_dir, progress=progress
    )
