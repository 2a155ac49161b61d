"""Tests for vae_xai.metrics.disentanglement.tabulated: scoring from a table of every factor
combination gives the scores of direct scoring (the reference: the metrics called with the
original ground truth and representation), and the dSprites experiment's choice of what to
tabulate (eval.tabulate)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.dsprites_gt import DSpritesGroundTruth
from experiments.configs import dsprites_disentanglement as ds_cfg
from vae_xai.experiments import dsprites_disentanglement as ds
from vae_xai.metrics import disentanglement as dis
from vae_xai.metrics.disentanglement import tabulated
from vae_xai.validation import ConfigError

SIZES = (3, 6, 10, 8, 8)  # 11,520 combinations


class ToyImages:
    """Deterministic 'images' of the factors: a fixed random projection of their one-hots."""

    def __init__(self) -> None:
        self.factor_sizes = SIZES
        self.proj = np.random.default_rng(5).normal(size=(sum(SIZES), 12)).astype(np.float32)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(s, size=num) for s in self.factor_sizes], axis=1)

    def sample_observations_from_factors(self, factors, rng=None) -> np.ndarray:
        offsets = np.cumsum((0,) + SIZES[:-1])
        onehot = np.zeros((len(factors), sum(SIZES)), np.float32)
        onehot[np.arange(len(factors))[:, None], factors + offsets] = 1.0
        return onehot @ self.proj


_W1 = jnp.asarray(np.random.default_rng(6).normal(size=(12, 16)), jnp.float32)
_W2 = jnp.asarray(np.random.default_rng(7).normal(size=(16, 5)), jnp.float32)


@jax.jit
def encoder(x):  # a small nonlinear 'encoder', jitted like the VAEs' representation_fn
    return jnp.tanh(jnp.asarray(x, jnp.float32) @ _W1) @ _W2


def test_table_rows_are_the_encodings_of_each_combination():
    gt = ToyImages()
    table_gt, table_fn = tabulated.tabulate(gt, encoder, batch_size=16)
    assert table_gt.table.shape == (int(np.prod(SIZES)), 5)
    factors = gt.sample_factors(40, np.random.default_rng(0))
    rows = table_gt.sample_observations_from_factors(factors)
    direct = np.asarray(encoder(gt.sample_observations_from_factors(factors)))
    np.testing.assert_allclose(table_fn(rows), direct, rtol=1e-6, atol=1e-6)
    # row numbering by hand: C order over the factor sizes
    f = np.array([[2, 5, 9, 7, 7], [0, 0, 0, 0, 1], [1, 2, 3, 4, 5]])
    expected = [
        2 * 3840 + 5 * 640 + 9 * 64 + 7 * 8 + 7,
        1,
        1 * 3840 + 2 * 640 + 3 * 64 + 4 * 8 + 5,
    ]
    assert table_gt.sample_observations_from_factors(f).tolist() == expected


@pytest.mark.parametrize("batch", [16, 32])
def test_scores_equal_direct_scoring(batch):
    gt = ToyImages()
    table_gt, table_fn = tabulated.tabulate(gt, encoder, batch_size=batch)
    # last partial batches (of 5 and 3 draws) as in FactorVAE's standard 10,000 = 156 * 64 + 16
    fv = dict(batch_size=batch, num_train=300, num_eval=200, num_variance_estimate=batch * 40 + 5)
    bv = dict(batch_size=batch, num_train=300, num_eval=200)
    mg = dict(batch_size=batch, num_train=batch * 50 + 3)
    for metric, kwargs in ((dis.factor_vae_score, fv), (dis.beta_vae_score, bv), (dis.mig, mg)):
        direct = metric(gt, encoder, np.random.default_rng(3), **kwargs)
        table = metric(table_gt, table_fn, np.random.default_rng(3), **kwargs)
        assert table == direct, metric.__name__
    # not trivially perfect: the toy encoder entangles the factors
    assert direct["discrete_mig"] < 0.9


def test_calls_of_another_size_are_encoded_directly_and_the_last_batch_is_padded():
    gt = ToyImages()
    sizes_seen = []

    def counting(x):
        sizes_seen.append(len(x))
        return encoder(x)

    # 11,520 = 115 * 100 + 20: the last table batch is padded to 100
    table_gt, table_fn = tabulated.tabulate(gt, counting, batch_size=100)
    assert set(sizes_seen) == {100} and len(sizes_seen) == 116
    every = np.stack(np.unravel_index(np.arange(11_520), SIZES), axis=1)
    np.testing.assert_allclose(
        table_gt.table[-20:], np.asarray(encoder(gt.sample_observations_from_factors(every[-20:])))
    )
    sizes_seen.clear()
    rows = np.array([5, 11_519, 7])
    direct = np.asarray(encoder(gt.sample_observations_from_factors(every[rows])))
    np.testing.assert_array_equal(table_fn(rows), direct)  # 3 != 100: encoded, not looked up
    assert sizes_seen == [3]
    table_fn(np.arange(100))
    assert sizes_seen == [3]  # a full batch is read from the table
    # the table's lookup with images (the original ground truth's observations) is named
    with pytest.raises(TypeError, match="pass the table's ground truth and representation"):
        table_fn(gt.sample_observations_from_factors(every[:100]))


def test_planned_encodings_by_hand():
    full = ds_cfg.get_config("factorvae").eval
    assert tabulated.planned_encodings("factor_vae", dict(full.factor_vae)) == 10_000 + 15_000 * 64
    assert tabulated.planned_encodings("beta_vae", dict(full.beta_vae)) == 2 * 15_000 * 64
    assert tabulated.planned_encodings("mig", dict(full.mig)) == 10_000
    with pytest.raises(ValueError, match="unknown metric 'sap'"):
        tabulated.planned_encodings("sap", {})


def test_which_metrics_the_dsprites_experiment_tabulates():
    gt = DSpritesGroundTruth()
    full = ds_cfg.get_config("factorvae")
    assert tabulated.num_combinations(gt) == 737_280
    # standard sizes: FactorVAE (970k draws) and beta-VAE (1.9M) share batch 64; MIG (10k at
    # batch 16) is cheaper encoded directly
    assert ds.tabulated_metrics(full, gt) == {64: ["factor_vae", "beta_vae"]}
    cpu = ds_cfg.get_config("factorvae,cpu")  # 213k draws at batch 64: a table would cost more
    assert ds.tabulated_metrics(cpu, gt) == {}
    cpu.eval.tabulate = "always"
    assert ds.tabulated_metrics(cpu, gt) == {64: ["factor_vae", "beta_vae", "mig"]}
    full.eval.tabulate = "never"
    assert ds.tabulated_metrics(full, gt) == {}
    full.eval.tabulate = "sometimes"
    with pytest.raises(ConfigError, match="eval.tabulate"):
        ds.validate(full)


def test_bad_inputs_name_the_problem():
    gt = ToyImages()
    table_gt, _ = tabulated.tabulate(gt, encoder, batch_size=64)
    with pytest.raises(ValueError, match="out of range"):
        table_gt.sample_observations_from_factors(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"\(num, 5\)"):
        table_gt.sample_observations_from_factors(np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="integer"):
        table_gt.sample_observations_from_factors(np.zeros((2, 5)))

    def nan_after_100(x):
        out = np.asarray(encoder(x)).copy()
        out[:, 0] = np.nan if nan_after_100.calls > 1 else out[:, 0]
        nan_after_100.calls += 1
        return out

    nan_after_100.calls = 0
    with pytest.raises(ValueError, match="non-finite values for rows 128-191"):
        tabulated.tabulate(gt, nan_after_100, batch_size=64)
    with pytest.raises(ValueError, match=r"must return \(n, D\)"):
        tabulated.tabulate(gt, lambda x: np.zeros(len(x)), batch_size=64)

    class Huge(ToyImages):
        factor_sizes = (10_000, 10_000)

    huge = Huge()
    huge.factor_sizes = (10_000, 10_000)
    with pytest.raises(ValueError, match="too many to tabulate"):
        tabulated.tabulate(huge, encoder)


class DSpritesCorner:
    """A 192-combination corner of dSprites (every shape, 2 scales, 2 orientations, 4 x 4
    positions), rendered: real images for the conv VAE, small enough to tabulate in a test."""

    factor_sizes = (3, 2, 2, 4, 4)
    _step = np.array([1, 5, 10, 8, 8])  # class k of a factor here is k * step there

    def __init__(self):
        self.full = DSpritesGroundTruth()

    def sample_factors(self, num, rng):
        return np.stack([rng.integers(s, size=num) for s in self.factor_sizes], axis=1)

    def sample_observations_from_factors(self, factors, rng=None):
        return self.full.sample_observations_from_factors(np.asarray(factors) * self._step)


def test_conv_vae_scores_equal_direct_scoring_with_partial_batches():
    """The dSprites conv VAE (random weights) rounds a batch of 16 differently from a batch of
    64 in the last bit; the table must still give direct scoring's numbers exactly."""
    from vae_xai import disentangle

    config = ds_cfg.get_config("factorvae")
    model, state, _, _ = ds.build(config, 0)
    rep = disentangle.representation_fn(model, ds.vae_params_of(state))
    gt = DSpritesCorner()
    table_gt, table_fn = tabulated.tabulate(gt, rep, batch_size=64)
    fv = dict(batch_size=64, num_train=40, num_eval=20, num_variance_estimate=2 * 64 + 16)
    direct = dis.factor_vae_score(gt, rep, np.random.default_rng(1), **fv)
    table = dis.factor_vae_score(table_gt, table_fn, np.random.default_rng(1), **fv)
    assert table == direct
    # the variance estimate's last 16 draws, as both paths represent them
    rng = np.random.default_rng(2)
    factors = gt.sample_factors(16, rng)
    np.testing.assert_array_equal(
        table_fn(table_gt.sample_observations_from_factors(factors)),
        np.asarray(rep(gt.sample_observations_from_factors(factors))),
    )
