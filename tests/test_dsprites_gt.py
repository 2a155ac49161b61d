"""The dSprites ground-truth adapter: factor classes -> the renderer's images, metric wiring."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import dsprites
from data_pipelines.dsprites_gt import DSpritesGroundTruth, make_batch_fn
from vae_xai.metrics.disentanglement import GroundTruthData, factor_vae_score


@pytest.fixture(scope="module")
def gt() -> DSpritesGroundTruth:
    return DSpritesGroundTruth()


def test_is_ground_truth_data(gt):
    assert isinstance(gt, GroundTruthData)
    assert gt.factor_sizes == (3, 6, 40, 32, 32)  # colour excluded
    assert gt.factor_names == ("shape", "scale", "orientation", "posX", "posY")


def test_sample_factors_ranges(gt):
    f = gt.sample_factors(4000, np.random.default_rng(0))
    assert f.shape == (4000, 5) and f.dtype.kind == "i"
    assert np.all(f.min(axis=0) == 0)
    np.testing.assert_array_equal(f.max(axis=0), np.asarray(gt.factor_sizes) - 1)
    # the small factors take every class
    for j, size in enumerate(gt.factor_sizes[:3]):
        assert len(np.unique(f[:, j])) == size
    assert gt.sample_factors(0, np.random.default_rng(0)).shape == (0, 5)
    np.testing.assert_array_equal(
        gt.sample_factors(7, np.random.default_rng(3)),
        gt.sample_factors(7, np.random.default_rng(3)),
    )


def test_observations_equal_render_of_factor_values(gt):
    rng = np.random.default_rng(1)
    f = gt.sample_factors(12, rng)
    f[0] = [0, 0, 0, 0, 0]
    f[1] = [2, 5, 39, 31, 31]
    obs = np.asarray(gt.sample_observations_from_factors(f, rng))
    assert obs.shape == (12, 64, 64, 1) and obs.dtype == np.float32
    values = dsprites.latent_values_from_classes(f)  # (12, 5): shape, scale, orient, x, y
    want = np.asarray(dsprites.render(*(values[:, i] for i in range(5))))
    np.testing.assert_array_equal(obs[..., 0], want)
    assert set(np.unique(obs)) <= {0.0, 1.0} and obs.reshape(12, -1).sum(1).min() > 0


def test_observation_options_and_errors():
    f = np.array([[1, 2, 3, 4, 5]])
    gt = DSpritesGroundTruth(channel_axis=False, to_numpy=True)
    out = gt.sample_observations_from_factors(f, None)
    assert isinstance(out, np.ndarray) and out.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="out of range"):
        gt.sample_observations_from_factors(np.array([[3, 0, 0, 0, 0]]), None)
    with pytest.raises(ValueError, match=r"\(num, 5\)"):
        gt.sample_observations_from_factors(np.zeros((2, 6), int), None)
    with pytest.raises(TypeError, match="integer"):
        gt.sample_observations_from_factors(np.zeros((2, 5)), None)
    with pytest.raises(TypeError, match="Generator"):
        gt.sample_factors(3, 0)


def test_batch_fn_deterministic_in_step():
    fn = make_batch_fn(0, 8, keys=("image", "image_disc"))
    a, b, c = fn(3), fn(3), fn(4)
    assert a["image"].shape == (8, 64, 64, 1) and a["image_disc"].shape == (8, 64, 64, 1)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["image"], a["image_disc"])
    assert not np.array_equal(make_batch_fn(1, 8)(3)["image"], a["image"])
    with pytest.raises(ValueError, match="distinct"):
        make_batch_fn(0, 8, keys=("image", "image"))


def test_factor_vae_metric_on_ideal_representation(gt):
    """The metric wiring end to end with a hand-made representation of known quality.

    The 'encoder' reads posX, posY from the pixel centroid and (roughly) scale from the
    area. If factors and images were misaligned (wrong order, wrong values) the votes for
    the fixed posX / posY factors would not land on the centroid dims.
    """

    def representation(images):
        x = np.asarray(images)[..., 0]
        rows, cols = np.mgrid[:64, :64]
        area = x.sum((1, 2))
        cy = (x * rows).sum((1, 2)) / area
        cx = (x * cols).sum((1, 2)) / area
        return np.stack([cx, cy, np.sqrt(area)], axis=1)

    score = factor_vae_score(
        gt, representation, np.random.default_rng(0), num_train=300, num_eval=200,
        num_variance_estimate=500, batch_size=16,
    )  # fmt: skip
    # 3 dims for 5 factors: posX, posY (and mostly scale) votes are right, shape and
    # orientation votes cannot be (about 0.6 expected; a misaligned wiring gives ~0.2-0.4)
    assert score["num_active_dims"] == 3
    assert score["eval_accuracy"] >= 0.5


def test_official_array_is_indexed_by_flat_index(tmp_path):
    """With the official array, observations are its rows at the release's flat index.

    A full-size (737,280 x 64 x 64) memory map in ``tmp_path`` is a sparse file (8 KiB on
    disk); a few rows get distinct, hand-placed contents.
    """
    images = np.memmap(tmp_path / "imgs.u8", np.uint8, "w+", shape=(dsprites.NUM_IMAGES, 64, 64))
    f = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0]])
    # row = classes . bases of (color, shape, scale, orientation, posX, posY), by hand
    bases = [737280, 245760, 40960, 1024, 32, 1]
    rows = [sum(b * c for b, c in zip(bases, [0, *r], strict=True)) for r in f]
    assert rows[1] == 2 * 245760 + 5 * 40960 + 39 * 1024 + 31 * 32 + 31
    for k, r in enumerate(rows[:3]):
        images[r, k, : k + 1] = 1  # row k of the image, k + 1 pixels
    gt = DSpritesGroundTruth(images=images)
    assert gt.source == "official" and DSpritesGroundTruth().source == "renderer"
    obs = np.asarray(gt.sample_observations_from_factors(f))
    assert obs.shape == (4, 64, 64, 1) and obs.dtype == np.float32
    for k in range(3):
        want = np.zeros((64, 64), np.float32)
        want[k, : k + 1] = 1
        np.testing.assert_array_equal(obs[k, ..., 0], want)
    np.testing.assert_array_equal(obs[3], obs[0])  # repeated combination, unsorted order
    with pytest.raises(ValueError, match="out of range"):
        gt.sample_observations_from_factors(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"full official array.*\(10, 64, 64\)"):
        DSpritesGroundTruth(images=np.zeros((10, 64, 64), np.uint8))


def test_from_official_missing_file_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError, match="dsprites"):
        DSpritesGroundTruth.from_official(str(tmp_path / "nope.npz"))


def test_batch_fn_rows_render_only_those_rows_of_the_same_batch():
    fn = make_batch_fn(2, 6, keys=("image", "image_disc"))
    assert fn.global_batch_size == 6
    full = fn(5)
    part = fn(5, rows=slice(2, 4))  # one process's rows (vae_xai.train.fit, several processes)
    for key in ("image", "image_disc"):
        assert part[key].shape == (2, 64, 64, 1)
        np.testing.assert_array_equal(part[key], full[key][2:4])
    with pytest.raises(ValueError, match="contiguous"):
        fn(5, rows=slice(0, 6, 2))
