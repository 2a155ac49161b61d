"""Tests for vae_xai.metrics.disentanglement (FactorVAE score, beta-VAE score, MIG).

Uses a toy ground-truth dataset whose observations are the factor classes themselves, so
the "identity" representation is perfectly disentangled and no dataset module is needed.
Sizes are kept small so the file runs in a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vae_xai.metrics import disentanglement as dis

FACTOR_SIZES = (3, 6, 10, 8, 8)
SMALL_FVAE = {"num_train": 1000, "num_eval": 500, "num_variance_estimate": 1000}
SMALL_BVAE = {"num_train": 600, "num_eval": 300}
SMALL_MIG = {"num_train": 1000}


class ToyData:
    """Independent uniform factors; observations = factor classes as floats, (num, F)."""

    def __init__(self, factor_sizes: tuple[int, ...] = FACTOR_SIZES) -> None:
        self.factor_sizes = factor_sizes

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(s, size=num) for s in self.factor_sizes], axis=1)

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return factors.astype(np.float64)


GT = ToyData()
PERM = np.array([3, 0, 4, 1, 2])
# Standardize the factors, then mix all of them with a random rotation.
_STD = np.sqrt((np.asarray(FACTOR_SIZES, dtype=np.float64) ** 2 - 1) / 12)
_ROT = np.linalg.qr(np.random.default_rng(123).normal(size=(5, 5)))[0]


def identity(x: np.ndarray) -> np.ndarray:
    return x


def permuted(x: np.ndarray) -> np.ndarray:
    return x[:, PERM]


def rotated(x: np.ndarray) -> np.ndarray:
    return (x / _STD) @ _ROT


def constant(x: np.ndarray) -> np.ndarray:
    return np.zeros((len(x), 4))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- protocol


def test_toy_data_satisfies_protocol() -> None:
    assert isinstance(GT, dis.GroundTruthData)


def test_compute_representations_shapes_and_uneven_batches() -> None:
    calls: list[int] = []

    def fn(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x

    reps, factors = dis.compute_representations(GT, fn, 37, rng(), batch_size=16)
    assert reps.shape == (37, 5) and factors.shape == (37, 5)
    assert calls == [16, 16, 5]
    np.testing.assert_array_equal(reps, factors)


# ----------------------------------------------------------------------------- FactorVAE


def test_majority_vote_classifier_and_accuracy_by_hand() -> None:
    votes = np.array([[5, 1], [0, 4], [2, 2], [0, 0]])  # (num_dims=4, num_factors=2)
    clf = dis.majority_vote_classifier(votes)
    np.testing.assert_array_equal(clf, [0, 1, 0, 0])  # tie -> lowest factor; empty -> 0
    assert dis.vote_accuracy(votes, clf) == pytest.approx((5 + 4 + 2) / 14)
    # Eval votes scored with the training classifier.
    eval_votes = np.array([[1, 3], [2, 2], [0, 0], [1, 1]])
    assert dis.vote_accuracy(eval_votes, clf) == pytest.approx((1 + 2 + 0 + 1) / 10)
    assert dis.vote_accuracy(np.zeros((2, 3), dtype=int), np.zeros(2, dtype=int)) == 0.0


def test_prune_dims_uses_standard_deviation() -> None:
    # std = 0.04 < 0.05 (inactive), std = 0.05 (active), std = 1 (active)
    np.testing.assert_array_equal(dis.prune_dims(np.array([0.04**2, 0.0025, 1.0])), [0, 1, 1])


def test_factor_vae_identity_is_perfect() -> None:
    # The fixed factor's dimension has zero variance in the batch; every other dimension
    # varies (a 3-class factor is constant over 64 samples with prob. 3**-63).
    out = dis.factor_vae_score(GT, identity, rng(), **SMALL_FVAE)
    assert out == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 5}


def test_factor_vae_constant_has_no_active_dims() -> None:
    out = dis.factor_vae_score(GT, constant, rng(), **SMALL_FVAE)
    assert out == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}


def test_factor_vae_counts_only_active_dims() -> None:
    def with_dead_dims(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.full((len(x), 2), 3.0), 0.01 * x[:, :1]], axis=1)

    out = dis.factor_vae_score(GT, with_dead_dims, rng(), **SMALL_FVAE)
    # 0.01 * std(3-class factor) = 0.008 < 0.05: that copy is pruned as well.
    assert out == {"train_accuracy": 1.0, "eval_accuracy": 1.0, "num_active_dims": 5}


def test_factor_vae_permutation_invariant_exactly() -> None:
    noisy = {"batch_size": 8}  # small batches make the score imperfect, so this is not vacuous

    def rot_perm(x: np.ndarray) -> np.ndarray:
        return rotated(x)[:, PERM]

    a = dis.factor_vae_score(GT, rotated, rng(3), **SMALL_FVAE, **noisy)
    b = dis.factor_vae_score(GT, rot_perm, rng(3), **SMALL_FVAE, **noisy)
    assert a["eval_accuracy"] < 1.0
    assert a == b
    assert dis.factor_vae_score(GT, permuted, rng(3), **SMALL_FVAE) == dis.factor_vae_score(
        GT, identity, rng(3), **SMALL_FVAE
    )


def test_factor_vae_reproducible_and_seed_stable() -> None:
    a = dis.factor_vae_score(GT, rotated, rng(5), **SMALL_FVAE)
    b = dis.factor_vae_score(GT, rotated, rng(5), **SMALL_FVAE)
    c = dis.factor_vae_score(GT, rotated, rng(6), **SMALL_FVAE)
    assert a == b
    # Binomial noise of 500 eval votes: sd <= 0.023; the classifiers may also differ.
    assert abs(a["eval_accuracy"] - c["eval_accuracy"]) < 0.1


# ----------------------------------------------------------------------------- beta-VAE


def test_beta_vae_identity_high_constant_chance() -> None:
    out = dis.beta_vae_score(GT, identity, rng(), **SMALL_BVAE)
    assert out["train_accuracy"] >= 0.9 and out["eval_accuracy"] >= 0.9
    const = dis.beta_vae_score(GT, constant, rng(), **SMALL_BVAE)
    # All features are 0: the classifier predicts one class, i.e. chance level (~1/5).
    assert const["eval_accuracy"] <= 0.3


def test_beta_vae_legacy_classifier_and_reproducibility() -> None:
    a = dis.beta_vae_score(GT, identity, rng(1), **SMALL_BVAE, classifier="liblinear_ovr")
    b = dis.beta_vae_score(GT, identity, rng(1), **SMALL_BVAE, classifier="liblinear_ovr")
    assert a == b and a["eval_accuracy"] >= 0.9
    with pytest.raises(ValueError, match="classifier"):
        dis.beta_vae_score(GT, identity, rng(), classifier="svm")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- MIG pieces


def test_histogram_discretize_matches_digitize_of_histogram_edges() -> None:
    x = np.array([[0.0, 5.0], [0.5, 5.0], [1.0, 5.0]])
    # Column 0: edges [0, .5, 1] -> digitize against [0, .5] -> labels 1, 2, 2.
    # Column 1 is constant: np.histogram uses the range [4.5, 5.5], edges [4.5, 5, 5.5], so
    # every value gets the single label 2.
    np.testing.assert_array_equal(dis.histogram_discretize(x, 2), [[1, 2], [2, 2], [2, 2]])
    # Integer classes 0..K-1 with K <= num_bins land in distinct bins (bin width < 1).
    k = np.arange(10.0)[:, None]
    assert len(np.unique(dis.histogram_discretize(k, 20))) == 10


def test_mig_by_hand_two_factor_toy() -> None:
    # Four equally likely points; factors y0, y1 independent fair bits (H = ln 2 each).
    # Code 0 = y0; code 1 = y0 AND y1.
    ys = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    codes = np.stack([ys[:, 0], ys[:, 0] & ys[:, 1]], axis=1)
    # I(y0 AND y1; y0) = H(AND) - H(AND | y0) = H(1/4) - ln2 / 2 = 0.75 ln(4/3).
    a = 0.75 * math.log(4 / 3)
    m = dis.discrete_mutual_info(codes, ys)
    np.testing.assert_allclose(m, [[math.log(2), 0.0], [a, a]], atol=1e-12)
    h = dis.discrete_entropy(ys)
    np.testing.assert_allclose(h, [math.log(2)] * 2)
    value, per_factor = dis.mig_from_mutual_info(m, h)
    np.testing.assert_allclose(per_factor, [1 - a / math.log(2), a / math.log(2)])
    assert value == pytest.approx(0.5)  # (ln2 - a + a - 0) / (2 ln2)


def test_mig_from_mutual_info_guards() -> None:
    m = np.array([[0.5, 0.0], [0.1, 0.0]])
    value, per_factor = dis.mig_from_mutual_info(m, np.array([1.0, 0.0]))
    assert value == pytest.approx(0.4) and math.isnan(per_factor[1])
    assert dis.mig_from_mutual_info(np.zeros((2, 2)), np.zeros(2))[0] == 0.0
    # A single latent: the second-best MI is 0.
    assert dis.mig_from_mutual_info(np.array([[0.3]]), np.array([0.6]))[0] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- MIG


def test_mig_identity_equals_one_minus_independence_bias() -> None:
    out = dis.mig(GT, identity, rng(), **SMALL_MIG)
    # With K <= 20 classes per factor, binning is a bijection, so I(code_j; factor_j) =
    # H(factor_j) exactly and MIG_j = 1 - max_{i != j} I(factor_i; factor_j) / H(factor_j).
    # The off-diagonal terms are the plug-in bias of independent factors,
    # ~(K_i - 1)(K_j - 1) / (2N) <= 63 / 2000 nats vs H >= ln 3, so MIG_j > 0.96.
    reps, factors = dis.compute_representations(GT, identity, 1000, rng(), 16)
    mi = dis.discrete_mutual_info(factors, factors)
    h = np.diag(mi)
    expected = 1 - (mi - np.diag(h)).max(axis=0) / h
    np.testing.assert_allclose(out["mig_per_factor"], expected, rtol=1e-12)
    np.testing.assert_allclose(out["factor_entropy"], h, rtol=1e-12)
    assert out["discrete_mig"] == pytest.approx(expected.mean())
    assert out["discrete_mig"] > 0.96


def test_mig_constant_is_zero() -> None:
    assert dis.mig(GT, constant, rng(), **SMALL_MIG)["discrete_mig"] == 0.0


def test_mig_permutation_invariant_exactly() -> None:
    a = dis.mig(GT, permuted, rng(2), **SMALL_MIG)
    b = dis.mig(GT, identity, rng(2), **SMALL_MIG)
    assert a["discrete_mig"] == b["discrete_mig"]
    assert a["mig_per_factor"] == b["mig_per_factor"]
    # The MI matrix itself is the identity's with its rows (latent dims) permuted.
    np.testing.assert_array_equal(np.asarray(a["mutual_info"]), np.asarray(b["mutual_info"])[PERM])


def test_mig_entangled_is_much_lower() -> None:
    ident = dis.mig(GT, identity, rng(), **SMALL_MIG)["discrete_mig"]
    mixed = dis.mig(GT, rotated, rng(), **SMALL_MIG)["discrete_mig"]
    assert mixed < 0.4 * ident


def test_mig_reproducible_and_seed_stable() -> None:
    a = dis.mig(GT, rotated, rng(7), **SMALL_MIG)
    b = dis.mig(GT, rotated, rng(7), **SMALL_MIG)
    c = dis.mig(GT, rotated, rng(8), **SMALL_MIG)
    assert a == b
    assert abs(a["discrete_mig"] - c["discrete_mig"]) < 0.05


# ----------------------------------------------------------------------------- validation


def test_wrong_shape_representation_raises() -> None:
    with pytest.raises(ValueError, match=r"shape \(num, D\)"):
        dis.mig(GT, lambda x: x[:, 0], rng(), num_train=20)
    with pytest.raises(ValueError, match=r"shape \(num, D\)"):
        dis.factor_vae_score(GT, lambda x: x[:1], rng(), **SMALL_FVAE)


def test_changing_dimension_raises() -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        return x[:, : 2 + len(x) % 2]

    with pytest.raises(ValueError, match="earlier calls"):
        dis.compute_representations(GT, fn, 33, rng(), batch_size=16)


def test_nan_representation_raises() -> None:
    def nan_fn(x: np.ndarray) -> np.ndarray:
        out = x.copy()
        out[0, 0] = np.nan
        return out

    for metric in (dis.factor_vae_score, dis.beta_vae_score, dis.mig):
        with pytest.raises(ValueError, match="NaN"):
            metric(GT, nan_fn, rng())


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError, match="Generator"):
        dis.mig(GT, identity, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        dis.factor_vae_score(GT, identity, rng(), batch_size=1)
    with pytest.raises(ValueError, match="num_train"):
        dis.mig(GT, identity, rng(), num_train=0)
    with pytest.raises(ValueError, match="sample_factors"):

        class Bad(ToyData):
            def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
                return super().sample_factors(num, rng)[:, :2]

        dis.mig(Bad(), identity, rng(), num_train=10)


def test_progress_bar_option_runs() -> None:
    out = dis.mig(GT, identity, rng(), num_train=64, progress=True)
    assert 0.0 <= out["discrete_mig"] <= 1.0
