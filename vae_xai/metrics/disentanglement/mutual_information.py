"""Mutual Information Gap (Chen et al. 2018): per factor, the gap between the two latent
dimensions that share the most information with it, over the factor's entropy.

Port of disentanglement_lib ``evaluation/metrics/mig.py`` and the discretizer and
information helpers of its ``utils.py``, with the defaults of its ``unsupervised_study_v1``
config (``num_train=10000, batch_size=16``, 20 histogram bins).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import mutual_info_score

from vae_xai.metrics.disentanglement.ground_truth import (
    GroundTruthData,
    RepresentationFn,
    _check_positive_int,
    _check_rng,
    compute_representations,
)

logger = logging.getLogger(__name__)


def histogram_discretize(values: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Discretizes each column into ``num_bins`` equal-width bins over its own range.

    disentanglement_lib ``utils._histogram_discretize``:
    ``np.digitize(x, np.histogram(x, num_bins)[1][:-1])`` per dimension, giving bin labels
    ``1..num_bins`` (the maximum lands in the last bin). A constant column maps to a single
    label.

    Args:
      values: ``(num, D)`` real values.
      num_bins: number of bins per dimension.

    Returns:
      ``(num, D)`` int64 bin labels.
    """
    _check_positive_int("num_bins", num_bins)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (num, D), got shape {values.shape}")
    out = np.zeros(values.shape, dtype=np.int64)
    for d in range(values.shape[1]):
        edges = np.histogram(values[:, d], num_bins)[1]
        out[:, d] = np.digitize(values[:, d], edges[:-1])
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Empirical mutual information (nats) between every code and every factor.

    disentanglement_lib ``utils.discrete_mutual_info`` (``sklearn.metrics.mutual_info_score``).

    Args:
      codes: ``(num, D)`` discrete labels (e.g. from :func:`histogram_discretize`).
      factors: ``(num, F)`` discrete factor classes.

    Returns:
      ``(D, F)``.

    Raises:
      ValueError: shapes other than ``(num, D)`` and ``(num, F)``.
    """
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(
            f"codes {codes.shape} and factors {factors.shape} must be (num, D) and (num, F)"
        )
    m = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for j in range(factors.shape[1]):
            m[i, j] = mutual_info_score(factors[:, j], codes[:, i])
    return m


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Empirical entropy (nats) of each factor column.

    As disentanglement_lib ``utils.discrete_entropy``: ``H(y) = I(y; y)``.

    Args:
      factors: ``(num, F)`` discrete factor classes.

    Returns:
      ``(F,)``.

    Raises:
      ValueError: ``factors`` is not 2-D.
    """
    factors = np.asarray(factors)
    if factors.ndim != 2:
        raise ValueError(f"factors must be (num, F), got shape {factors.shape}")
    return np.array(
        [mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])]
    )


def mig_from_mutual_info(mutual_info: np.ndarray, entropy: np.ndarray) -> tuple[float, np.ndarray]:
    """MIG from a mutual-information matrix and the factor entropies.

    Per factor: ``(largest MI - second largest MI) / H(factor)``; MIG is the mean over
    factors. Factors with zero entropy are excluded (``nan`` in the per-factor output, with a
    logged warning; disentanglement_lib would return ``nan`` overall); if every factor has zero
    entropy MIG is 0.0. With ``D == 1`` the second largest MI is 0.

    Args:
      mutual_info: ``(D, F)`` mutual information (:func:`discrete_mutual_info`).
      entropy: ``(F,)`` factor entropies (:func:`discrete_entropy`).

    Returns:
      ``(mig, per_factor)`` with ``per_factor`` of shape ``(F,)``.

    Raises:
      ValueError: inconsistent shapes.
    """
    m = np.asarray(mutual_info, dtype=np.float64)
    h = np.asarray(entropy, dtype=np.float64)
    if m.ndim != 2 or h.shape != (m.shape[1],):
        raise ValueError(f"mutual_info {m.shape} must be (D, F) and entropy {h.shape} (F,)")
    sorted_m = np.sort(m, axis=0)[::-1]
    second = sorted_m[1] if m.shape[0] > 1 else np.zeros(m.shape[1])
    gap = sorted_m[0] - second
    valid = h > 0
    per_factor = np.full(m.shape[1], np.nan)
    per_factor[valid] = gap[valid] / h[valid]
    if not valid.all():
        logger.warning(
            "MIG: %d factor(s) have zero entropy in the sample and are excluded",
            int((~valid).sum()),
        )
    mig_value = float(np.mean(per_factor[valid])) if valid.any() else 0.0
    return mig_value, per_factor


def mig(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
    progress: bool = False,
) -> dict[str, Any]:
    """Mutual Information Gap (Chen et al. 2018), as disentanglement_lib computes it.

    Port of ``disentanglement_lib.evaluation.metrics.mig.compute_mig`` with the histogram
    discretizer: represent ``num_train`` random points (in batches of ``batch_size``),
    discretize each dimension into ``num_bins`` equal-width bins, compute the discrete
    mutual information of each dimension with each factor and each factor's entropy, and
    average ``(top MI - second MI) / H(factor)`` over factors.

    Args:
      gt: the dataset (:class:`~.ground_truth.GroundTruthData`).
      representation_fn: ``observations -> (n, D)``, e.g. the encoder means.
      rng: source of all randomness.
      num_train: number of points.
      batch_size: points per ``representation_fn`` call.
      num_bins: histogram bins per dimension.
      progress: show a tqdm progress bar.

    Returns:
      ``{"discrete_mig": float, "mig_per_factor": list[float] (nan for constant factors),
      "mutual_info": list[list[float]] (D x F, nats), "factor_entropy": list[float]}``
      -- plain Python types so the dict serialises to JSON.

    Raises:
      ValueError: a size is not a positive integer, or a bad ``representation_fn`` output
        (see :func:`~.ground_truth.compute_representations`).
      TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    _check_rng(rng)
    _check_positive_int("num_train", num_train)
    _check_positive_int("num_bins", num_bins)
    reps, factors = compute_representations(
        gt, representation_fn, num_train, rng, batch_size, progress=progress
    )
    codes = histogram_discretize(reps, num_bins)
    m = discrete_mutual_info(codes, factors)
    h = discrete_entropy(factors)
    mig_value, per_factor = mig_from_mutual_info(m, h)
    logger.info("MIG: %.4f", mig_value)
    return {
        "discrete_mig": mig_value,
        "mig_per_factor": [float(x) for x in per_factor],
        "mutual_info": m.tolist(),
        "factor_entropy": h.tolist(),
    }
