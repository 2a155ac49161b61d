"""beta-VAE score (Higgins et al. 2017): accuracy of a linear classifier that tells which
factor was held fixed from the mean absolute difference of paired representations.

Port of disentanglement_lib ``evaluation/metrics/beta_vae.py`` (``beta_vae_sklearn``) with
the defaults of its ``unsupervised_study_v1`` config.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from sklearn import linear_model
from sklearn.multiclass import OneVsRestClassifier

from vae_xai.metrics.disentanglement.ground_truth import (
    GroundTruthData,
    RepresentationFn,
    _check_positive_int,
    _check_rng,
    _maybe_tqdm,
    _num_factors,
    _represent,
    _sample_factors,
)

logger = logging.getLogger(__name__)


def _beta_vae_points(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    rng: np.random.Generator,
    batch_size: int,
    num_points: int,
    dim: int | None,
    progress: bool,
    desc: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(num_points, D)`` and labels ``(num_points,)`` for the beta-VAE score.

    disentanglement_lib ``beta_vae._generate_training_sample``: pick a factor uniformly,
    sample two batches of factors, copy that factor from the first to the second batch,
    represent both, and use ``mean_over_batch |z1 - z2|`` as the feature vector.
    """
    num_factors = _num_factors(gt)
    labels = np.zeros(num_points, dtype=np.int64)
    points: np.ndarray | None = None
    for i in _maybe_tqdm(range(num_points), progress, desc, num_points):
        index = int(rng.integers(num_factors))
        factors1 = _sample_factors(gt, batch_size, rng)
        factors2 = _sample_factors(gt, batch_size, rng)
        factors2[:, index] = factors1[:, index]
        obs1 = gt.sample_observations_from_factors(factors1, rng)
        obs2 = gt.sample_observations_from_factors(factors2, rng)
        rep1 = _represent(representation_fn, obs1, batch_size, dim)
        dim = rep1.shape[1]
        rep2 = _represent(representation_fn, obs2, batch_size, dim)
        if points is None:
            points = np.zeros((num_points, dim))
        labels[i] = index
        points[i] = np.mean(np.abs(rep1 - rep2), axis=0)
    assert points is not None
    return points, labels


def beta_vae_score(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    classifier: Literal["lbfgs", "liblinear_ovr"] = "lbfgs",
    progress: bool = False,
) -> dict[str, float]:
    """beta-VAE disentanglement score (Higgins et al. 2017), as disentanglement_lib computes it.

    Port of ``disentanglement_lib.evaluation.metrics.beta_vae.compute_beta_vae_sklearn``:
    each point is the mean absolute difference between the representations of
    ``batch_size`` pairs of samples that share one uniformly chosen factor; a linear
    classifier predicts which factor was shared. Train accuracy on the ``num_train``
    training points, eval accuracy on ``num_eval`` fresh points.

    Args:
      gt: ground-truth data (see :class:`GroundTruthData`).
      representation_fn: observations ``(num, ...)`` -> representation ``(num, D)``.
      rng: seeded ``np.random.Generator``; the only source of randomness.
      batch_size: pairs averaged per point.
      num_train: number of training points (they must contain at least two distinct
        factor labels).
      num_eval: number of evaluation points.
      classifier: ``"lbfgs"`` = ``sklearn.linear_model.LogisticRegression()`` with the
        current sklearn defaults (what disentanglement_lib's code runs on today's sklearn);
        ``"liblinear_ovr"`` = one-vs-rest liblinear logistic regression, the sklearn default
        when disentanglement_lib was published.
      progress: show tqdm progress bars.

    Returns:
      ``{"train_accuracy": float, "eval_accuracy": float}``. A sklearn
      ``ConvergenceWarning`` (lbfgs hits ``max_iter=100``) is passed through, not hidden.

    Raises:
      ValueError: a size out of range, an unknown ``classifier``, a bad
        ``representation_fn`` output, or training points with a single factor label.
      TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    _check_rng(rng)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("num_train", num_train)
    _check_positive_int("num_eval", num_eval)
    _num_factors(gt)
    # sklearn cannot take a Generator; lbfgs/liblinear barely use it, but keep it seeded.
    seed = int(rng.integers(2**31 - 1))
    if classifier == "lbfgs":
        model: Any = linear_model.LogisticRegression(random_state=seed)
    elif classifier == "liblinear_ovr":
        model = OneVsRestClassifier(
            linear_model.LogisticRegression(solver="liblinear", random_state=seed)
        )
    else:
        raise ValueError(f"classifier must be 'lbfgs' or 'liblinear_ovr', got {classifier!r}")

    train_x, train_y = _beta_vae_points(
        gt, representation_fn, rng, batch_size, num_train, None, progress, "beta-VAE train"
    )
    if np.unique(train_y).size < 2:
        raise ValueError(
            f"beta-VAE score: the {num_train} training points contain a single factor label; "
            "increase num_train"
        )
    model.fit(train_x, train_y)
    train_accuracy = float(np.mean(model.predict(train_x) == train_y))
    eval_x, eval_y = _beta_vae_points(
        gt,
        representation_fn,
        rng,
        batch_size,
        num_eval,
        train_x.shape[1],
        progress,
        "beta-VAE eval",
    )
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_y))
    logger.info("beta-VAE score: train %.4f, eval %.4f", train_accuracy, eval_accuracy)
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}
