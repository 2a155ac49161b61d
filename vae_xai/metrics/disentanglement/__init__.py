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

One metric per module, all names re-exported here: :mod:`~.factor_vae`, :mod:`~.beta_vae`,
:mod:`~.mutual_information` (MIG), and :mod:`~.ground_truth` (the dataset protocol and the
representation sampling they share), and :mod:`~.tabulated` (scoring from a table of every
factor combination encoded once: the same scores, faster at standard sizes).

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

import logging

from vae_xai.metrics.disentanglement.beta_vae import beta_vae_score
from vae_xai.metrics.disentanglement.factor_vae import (
    factor_vae_score,
    majority_vote_classifier,
    prune_dims,
    vote_accuracy,
)
from vae_xai.metrics.disentanglement.ground_truth import (
    GroundTruthData,
    RepresentationFn,
    compute_representations,
)
from vae_xai.metrics.disentanglement.mutual_information import (
    discrete_entropy,
    discrete_mutual_info,
    histogram_discretize,
    mig,
    mig_from_mutual_info,
)
from vae_xai.metrics.disentanglement.tabulated import TabulatedGroundTruth, tabulate

# The parent of the metric modules' loggers (each logs under ``<this package>.<module>``).
logger = logging.getLogger(__name__)

__all__ = [
    "GroundTruthData",
    "RepresentationFn",
    "TabulatedGroundTruth",
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
    "tabulate",
    "vote_accuracy",
]
