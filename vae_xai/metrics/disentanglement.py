"""Supervised disentanglement metrics: FactorVAE score, beta-VAE score and MIG.

Faithful NumPy ports of the implementations in disentanglement_lib (Locatello et al.,
"Challenging Common Assumptions in the Unsupervised Learning of Disentangled
Representations", ICML 2019; https://github.com/google-research/disentanglement_lib,
``disentanglement_lib/evaluation/metrics/{factor_vae,beta_vae,mig,utils}.py``) with the
defaults of its ``unsupervised_study_v1`` metric configs:

* FactorVAE score (Kim & Mnih 2018): ``batch_size=64, num_train=10000, num_eval=5000,
  num_variance_estimate=10000, prune_dims.threshold=0.05``.
* beta-VAE score (Higgins et al. 2017, ``beta_vae_sklearn``): ``batch_size=64,
  num_train=10000, num_eval=5000``, sklearn ``LogisticRegression`` with default settings.
* MIG (Chen et al. 2018): ``num_train=10000, batch_size=16``, histogram discretizer with
  ``num_bins=20``.

The metrics never import a dataset module. A dataset only has to satisfy the small
:class:`GroundTruthData` protocol (factor sizes, factor sampling, rendering observations
from factors). For dSprites the factors are, as in disentanglement_lib, ``shape, scale,
orientation, posX, posY`` with sizes ``(3, 6, 40, 32, 32)`` -- the constant colour factor
is excluded. Choosing and ordering the factors is the data object's business.

The representation is any callable ``representation_fn(observations) -> (num, D)``; for a
VAE, the encoder means. It may return JAX device arrays (they are converted with
``np.asarray``). All randomness comes from a caller-supplied ``np.random.Generator``, so a
fixed seed gives bit-identical scores. Because disentanglement_lib draws from a legacy
``np.random.RandomState``, the individual samples differ from it even at the same seed;
the estimators themselves are the same.

Array conventions in this module are *sample-major*: representations are ``(num, D)`` and
factors ``(num, F)``. disentanglement_lib's utilities use the transposed ``(D, num)`` /
``(F, num)`` layout; the computations are otherwise identical.

Deviations from disentanglement_lib (all deliberate, none changes a score where the
original is well defined):

* FactorVAE ``num_active_dims`` is the number of active dimensions. The original returns
  ``len(active_dims)`` of a boolean mask, i.e. the total number of dimensions.
* FactorVAE votes are recorded at the original dimension index (the original indexes the
  vote matrix with the argmin *within the active subset*). The majority-vote accuracy is
  invariant to this relabelling, so the scores are identical.
* The FactorVAE vote matrix is ``(num_dims, num_factors)`` (the original is transposed).
* MIG: factors with zero empirical entropy (constant in the sample) are left out of the
  mean with a logged warning instead of producing ``nan`` (0/0); with a single latent
  dimension the "second best" mutual information is taken as 0 instead of failing.
* beta-VAE: sklearn's current ``LogisticRegression()`` defaults are used, which is what the
  original code does on a current sklearn (``lbfgs``, multinomial, ``C=1``,
  ``max_iter=100``). When disentanglement_lib was published (sklearn < 0.22) the default was
  ``liblinear`` one-vs-rest; ``classifier="liblinear_ovr"`` reproduces that.
* Representation calls are batched by ``batch_size`` for the global-variance estimate of
  FactorVAE (the original makes one call with all ``num_variance_estimate`` points).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
from sklearn import linear_model
from sklearn.metrics import mutual_info_score
from sklearn.multiclass import OneVsRestClassifier

logger = logging.getLogger(__name__)

RepresentationFn = Callable[[Any], Any]
"""Maps a batch of observations (leading axis ``num``) to an array-like ``(num, D)``."""


@runtime_checkable
class GroundTruthData(Protocol):
    """A dataset with discrete ground-truth factors of variation.

    Attributes:
      factor_sizes: number of classes of each factor, e.g. dSprites
        ``(3, 6, 40, 32, 32)`` for shape, scale, orientation, posX, posY.
    """

    factor_sizes: Sequence[int]

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """Returns ``(num, F)`` integer factor classes, factor ``j`` in ``[0, factor_sizes[j])``."""
        ...

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Returns a batch of ``len(factors)`` observations rendered from ``(num, F)`` factors."""
        ...


# --------------------------------------------------------------------------------------
# Input validation and representation helpers
# --------------------------------------------------------------------------------------


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )


def _num_factors(gt: GroundTruthData) -> int:
    sizes = tuple(int(s) for s in gt.factor_sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"factor_sizes must be a non-empty sequence of sizes >= 1, got {sizes}")
    return len(sizes)


def _sample_factors(gt: GroundTruthData, num: int, rng: np.random.Generator) -> np.ndarray:
    """Calls ``gt.sample_factors`` and checks it returned ``(num, F)``."""
    factors = np.asarray(gt.sample_factors(num, rng))
    expected = (num, _num_factors(gt))
    if factors.shape != expected:
        raise ValueError(
            f"sample_factors({num}) returned shape {factors.shape}, expected {expected}"
        )
    return factors.copy()  # we may write into it (fixing a factor)


def _represent(
    representation_fn: RepresentationFn, observations: Any, num: int, dim: int | None = None
) -> np.ndarray:
    """Calls ``representation_fn`` and validates its ``(num, D)`` finite output (as float64).

    Args:
      representation_fn: the representation under test.
      observations: a batch of ``num`` observations.
      num: expected leading dimension.
      dim: expected representation size ``D`` if already known (must stay constant).
    """
    reps = np.asarray(representation_fn(observations), dtype=np.float64)
    if reps.ndim != 2 or reps.shape[0] != num:
        raise ValueError(
            f"representation_fn must return an array of shape (num, D) = ({num}, D), "
            f"got shape {reps.shape}"
        )
    if dim is not None and reps.shape[1] != dim:
        raise ValueError(
            f"representation_fn returned {reps.shape[1]} dimensions, earlier calls returned {dim}"
        )
    if reps.shape[1] == 0:
        raise ValueError("representation_fn returned a representation with 0 dimensions")
    if not np.all(np.isfinite(reps)):
        n_nan = int(np.isnan(reps).sum())
        n_inf = int(np.isinf(reps).sum())
        raise ValueError(
            f"representation_fn returned non-finite values (NaN: {n_nan}, inf: {n_inf}) "
            f"in a batch of shape {reps.shape}"
        )
    return reps


def _maybe_tqdm(iterable: Iterable[Any], progress: bool, desc: str, total: int) -> Iterable[Any]:
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


def compute_representations(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    num: int,
    rng: np.random.Generator,
    batch_size: int = 16,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Representations of ``num`` random points and the factors that generated them.

    Port of disentanglement_lib ``utils.generate_batch_factor_code``: for each batch of at
    most ``batch_size`` points, sample factors, render observations, represent them. The
    last batch is smaller when ``num`` is not a multiple of ``batch_size`` (a jitted
    ``representation_fn`` then compiles once more for that shape).

    Returns:
      ``(representations, factors)`` with shapes ``(num, D)`` float64 and ``(num, F)``,
      sample-major (the transpose of disentanglement_lib's ``(D, num)``, ``(F, num)``).
    """
    _check_positive_int("num", num)
    _check_positive_int("batch_size", batch_size)
    _check_rng(rng)
    reps: list[np.ndarray] = []
    factors: list[np.ndarray] = []
    dim: int | None = None
    starts = range(0, num, batch_size)
    for start in _maybe_tqdm(starts, progress, "representations", len(starts)):
        n = min(batch_size, num - start)
        f = _sample_factors(gt, n, rng)
        obs = gt.sample_observations_from_factors(f, rng)
        r = _represent(representation_fn, obs, n, dim)
        dim = r.shape[1]
        reps.append(r)
        factors.append(f)
    return np.concatenate(reps, axis=0), np.concatenate(factors, axis=0)


# --------------------------------------------------------------------------------------
# FactorVAE score
# --------------------------------------------------------------------------------------


def prune_dims(variances: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Mask of active dimensions: ``sqrt(variance) >= threshold``.

    disentanglement_lib ``factor_vae._prune_dims`` (its signature default is 0, the metric
    config binds ``prune_dims.threshold = 0.05``, which is our default). Dimensions whose
    posterior means barely vary have collapsed to the prior and cannot vote.
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

    ``sum_d votes[d, classifier[d]] / sum(votes)``; 0.0 when there are no votes.
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
      num_train, num_eval: number of training / evaluation votes.
      num_variance_estimate: points for the global variance (>= 2).
      prune_threshold: minimum global standard deviation of an active dimension.
      progress: show tqdm progress bars.

    Returns:
      ``{"train_accuracy": float, "eval_accuracy": float, "num_active_dims": int}``. If no
      dimension is active both accuracies are 0.0 (as in disentanglement_lib) and a warning
      is logged.
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


# --------------------------------------------------------------------------------------
# beta-VAE score
# --------------------------------------------------------------------------------------


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
      gt, representation_fn, rng: as in :func:`factor_vae_score`.
      batch_size: pairs averaged per point.
      num_train, num_eval: number of training / evaluation points (the training set must
        contain at least two distinct factor labels).
      classifier: ``"lbfgs"`` = ``sklearn.linear_model.LogisticRegression()`` with the
        current sklearn defaults (what disentanglement_lib's code runs on today's sklearn);
        ``"liblinear_ovr"`` = one-vs-rest liblinear logistic regression, the sklearn default
        when disentanglement_lib was published.
      progress: show tqdm progress bars.

    Returns:
      ``{"train_accuracy": float, "eval_accuracy": float}``. A sklearn
      ``ConvergenceWarning`` (lbfgs hits ``max_iter=100``) is passed through, not hidden.
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


# --------------------------------------------------------------------------------------
# Mutual Information Gap
# --------------------------------------------------------------------------------------


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

    disentanglement_lib ``utils.discrete_mutual_info`` (``sklearn.metrics.
    mutual_info_score``). Args: ``codes (num, D)`` and ``factors (num, F)``, discrete
    labels. Returns ``(D, F)``.
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
    """Empirical entropy (nats) of each factor column, ``(num, F) -> (F,)``.

    As disentanglement_lib ``utils.discrete_entropy``: ``H(y) = I(y; y)``.
    """
    factors = np.asarray(factors)
    if factors.ndim != 2:
        raise ValueError(f"factors must be (num, F), got shape {factors.shape}")
    return np.array(
        [mutual_info_score(factors[:, j], factors[:, j]) for j in range(factors.shape[1])]
    )


def mig_from_mutual_info(mutual_info: np.ndarray, entropy: np.ndarray) -> tuple[float, np.ndarray]:
    """MIG from a ``(D, F)`` mutual-information matrix and ``(F,)`` factor entropies.

    Per factor: ``(largest MI - second largest MI) / H(factor)``; MIG is the mean over
    factors. Factors with zero entropy are excluded (``nan`` in the per-factor output;
    disentanglement_lib would return ``nan`` overall); if every factor has zero entropy MIG
    is 0.0. With ``D == 1`` the second largest MI is 0.

    Returns:
      ``(mig, per_factor)`` with ``per_factor`` of shape ``(F,)``.
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

    Returns:
      ``{"discrete_mig": float, "mig_per_factor": list[float] (nan for constant factors),
      "mutual_info": list[list[float]] (D x F, nats), "factor_entropy": list[float]}``
      -- plain Python types so the dict serialises to JSON.
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


__all__ = [
    "GroundTruthData",
    "RepresentationFn",
    "beta_vae_score",
    "compute_representations",
    "discrete_entropy",
    "discrete_mutual_info",
    "factor_vae_score",
    "histogram_discretize",
    "majority_vote_classifier",
    "mig",
    "mig_from_mutual_info",
    "prune_dims",
    "vote_accuracy",
]
