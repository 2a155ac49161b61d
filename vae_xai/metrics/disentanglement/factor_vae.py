"""FactorVAE score (Kim & Mnih 2018): majority-vote accuracy of the dimension that varies least
when one factor is held fixed.

Port of disentanglement_lib ``evaluation/metrics/factor_vae.py`` with the defaults of its
``unsupervised_study_v1`` config (see :mod:`vae_xai.metrics.disentanglement` for the
deliberate deviations).
"""

from __future__ import annotations

import logging

import numpy as np

from vae_xai.metrics.disentanglement.ground_truth import (
    GroundTruthData,
    RepresentationFn,
    _check_positive_int,
    _check_rng,
    _maybe_tqdm,
    _num_factors,
    _represent,
    _sample_factors,
    compute_representations,
)

logger = logging.getLogger(__name__)


def prune_dims(variances: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Mask of active dimensions: ``sqrt(variance) >= threshold``.

    disentanglement_lib ``factor_vae._prune_dims`` (its signature default is 0, the metric
    config binds ``prune_dims.threshold = 0.05``, which is our default). Dimensions whose
    posterior means barely vary have collapsed to the prior and cannot vote.

    Args:
      variances: ``(D,)`` global variances of the representation dimensions.
      threshold: minimum standard deviation of an active dimension.

    Returns:
      ``(D,)`` bool mask.
    """
    return np.sqrt(np.asarray(variances, dtype=np.float64)) >= threshold


def majority_vote_classifier(votes: np.ndarray) -> np.ndarray:
    """Majority-vote classifier of the FactorVAE score.

    Args:
      votes: ``(num_dims, num_factors)`` counts; ``votes[d, k]`` is how often dimension
        ``d`` had the smallest normalised variance when factor ``k`` was fixed.

    Returns:
      ``(num_dims,)`` predicted factor per dimension (``argmax`` over factors; ties go to
      the lowest factor index, as ``np.argmax`` in disentanglement_lib).
    """
    votes = np.asarray(votes)
    if votes.ndim != 2:
        raise ValueError(f"votes must be (num_dims, num_factors), got shape {votes.shape}")
    return np.argmax(votes, axis=1)


def vote_accuracy(votes: np.ndarray, classifier: np.ndarray) -> float:
    """Fraction of votes that ``classifier`` (dim -> factor) gets right.

    ``sum_d votes[d, classifier[d]] / sum(votes)``.

    Args:
      votes: ``(num_dims, num_factors)`` vote counts.
      classifier: ``(num_dims,)`` predicted factor per dimension
        (:func:`majority_vote_classifier`).

    Returns:
      The accuracy; 0.0 when there are no votes.

    Raises:
      ValueError: inconsistent shapes.
    """
    votes = np.asarray(votes)
    classifier = np.asarray(classifier)
    if votes.ndim != 2 or classifier.shape != (votes.shape[0],):
        raise ValueError(
            f"votes {votes.shape} must be (num_dims, num_factors) and classifier "
            f"{classifier.shape} must be (num_dims,)"
        )
    total = votes.sum()
    if total == 0:
        return 0.0
    return float(votes[np.arange(votes.shape[0]), classifier].sum() / total)


def _factor_vae_votes(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    rng: np.random.Generator,
    batch_size: int,
    num_points: int,
    global_variances: np.ndarray,
    active_dims: np.ndarray,
    progress: bool,
    desc: str,
) -> np.ndarray:
    """``(num_dims, num_factors)`` vote counts from ``num_points`` fixed-factor batches.

    disentanglement_lib ``factor_vae._generate_training_batch`` /
    ``_generate_training_sample``: pick a factor uniformly, sample ``batch_size`` factor
    vectors, set that factor to the first vector's value in all of them, represent, and vote
    for the active dimension with the smallest ``var(z_d, ddof=1) / global_var_d`` (the
    variance of the representation within the batch divided by its global variance).
    """
    num_factors = _num_factors(gt)
    dim = global_variances.shape[0]
    active_idx = np.flatnonzero(active_dims)
    votes = np.zeros((dim, num_factors), dtype=np.int64)
    for _ in _maybe_tqdm(range(num_points), progress, desc, num_points):
        factor_index = int(rng.integers(num_factors))
        factors = _sample_factors(gt, batch_size, rng)
        factors[:, factor_index] = factors[0, factor_index]
        obs = gt.sample_observations_from_factors(factors, rng)
        reps = _represent(representation_fn, obs, batch_size, dim)
        local_variances = np.var(reps, axis=0, ddof=1)
        argmin = np.argmin(local_variances[active_idx] / global_variances[active_idx])
        votes[active_idx[argmin], factor_index] += 1
    return votes


def factor_vae_score(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    progress: bool = False,
) -> dict[str, float | int]:
    """FactorVAE disentanglement score (Kim & Mnih 2018), as disentanglement_lib computes it.

    Port of ``disentanglement_lib.evaluation.metrics.factor_vae.compute_factor_vae``:

    1. Global variance of each representation dimension (``ddof=1``) from
       ``num_variance_estimate`` random points; dimensions with
       ``sqrt(var) < prune_threshold`` are inactive and never vote.
    2. Each vote fixes one uniformly chosen factor across ``batch_size`` samples and votes
       ``(argmin_d var_d / global_var_d over active d, factor)``.
    3. ``num_train`` votes form a ``(num_dims, num_factors)`` count matrix; the classifier
       maps each dimension to its most frequent factor. Train accuracy is measured on those
       votes, eval accuracy on ``num_eval`` fresh ones.

    Args:
      gt: ground-truth data (see :class:`GroundTruthData`).
      representation_fn: observations ``(num, ...)`` -> representation ``(num, D)``.
      rng: seeded ``np.random.Generator``; the only source of randomness.
      batch_size: samples per vote (>= 2, the variance uses ``ddof=1``); also the batch
        size of the representation calls for the global-variance estimate.
      num_train: number of training votes.
      num_eval: number of evaluation votes.
      num_variance_estimate: points for the global variance (>= 2).
      prune_threshold: minimum global standard deviation of an active dimension.
      progress: show tqdm progress bars.

    Returns:
      ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int}``. If no
      dimension is active both accuracies are 0.0 (as in disentanglement_lib) and a warning
      is logged.

    Raises:
      ValueError: a size out of range or a bad ``representation_fn`` output.
      TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    _check_rng(rng)
    _check_positive_int("batch_size", batch_size, 2)
    _check_positive_int("num_train", num_train)
    _check_positive_int("num_eval", num_eval)
    _check_positive_int("num_variance_estimate", num_variance_estimate, 2)
    _num_factors(gt)

    reps, _ = compute_representations(
        gt, representation_fn, num_variance_estimate, rng, batch_size, progress=progress
    )
    global_variances = np.var(reps, axis=0, ddof=1)
    active_dims = prune_dims(global_variances, prune_threshold)
    num_active = int(active_dims.sum())
    if num_active == 0:
        logger.warning(
            "FactorVAE score: no active dimension (all global std < %g); scores are 0.",
            prune_threshold,
        )
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    common = (gt, representation_fn, rng, batch_size)
    train_votes = _factor_vae_votes(
        *common, num_train, global_variances, active_dims, progress, "FactorVAE train votes"
    )
    classifier = majority_vote_classifier(train_votes)
    train_accuracy = vote_accuracy(train_votes, classifier)
    eval_votes = _factor_vae_votes(
        *common, num_eval, global_variances, active_dims, progress, "FactorVAE eval votes"
    )
    eval_accuracy = vote_accuracy(eval_votes, classifier)
    logger.info("FactorVAE score: train %.4f, eval %.4f", train_accuracy, eval_accuracy)
    return {
        "train_accuracy": train_accuracy,
        "eval_accuracy": eval_accuracy,
        "num_active_dims": num_active,
    }
