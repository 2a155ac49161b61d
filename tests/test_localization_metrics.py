"""Tests for vae_xai.metrics.localization.

References are independent of the code under test: scikit-learn (roc_auc_score,
roc_curve), hand-computed values, and brute-force loops over thresholds written here.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from vae_xai.metrics import (
    aupro,
    auroc_histogram_error_bound,
    best_iou,
    image_auroc,
    pixel_auroc,
    pro_curve,
    roc_curve,
)

SEEDS = (0, 1, 2)


def _random_maps(
    seed: int, levels: int | None, shape=(6, 12, 12), frac=0.25
) -> tuple[np.ndarray, np.ndarray]:
    """float32 score maps (quantized to `levels` values -> many ties) and bool masks."""
    rng = np.random.default_rng(seed)
    scores = rng.random(shape).astype(np.float32)
    if levels is not None:
        scores = (np.floor(scores * levels) / levels).astype(np.float32)
    masks = rng.random(shape) < frac
    # Make scores informative so the AUROC is not ~0.5.
    scores = (scores + 0.3 * masks).astype(np.float32)
    if levels is not None:
        scores = (np.round(scores * levels) / levels).astype(np.float32)
    return scores, masks


# ---------------------------------------------------------------- AUROC vs sklearn


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("levels", [2, 5, 17, None])
@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1 << 21])
def test_pixel_auroc_matches_sklearn(seed, levels, chunk_size):
    scores, masks = _random_maps(seed, levels)
    expected = roc_auc_score(masks.ravel(), scores.ravel())
    got = pixel_auroc(scores, masks, chunk_size=chunk_size, backend="numpy")
    assert isinstance(got, float)
    assert got == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("levels", [3, None])
def test_pixel_auroc_jax_backend_and_jax_input(levels):
    scores, masks = _random_maps(5, levels)
    expected = roc_auc_score(masks.ravel(), scores.ravel())
    assert pixel_auroc(scores, masks, backend="jax", chunk_size=50) == pytest.approx(
        expected, abs=1e-6
    )
    got = pixel_auroc(jnp.asarray(scores), jnp.asarray(masks))  # auto backend, JAX input
    assert got == pytest.approx(expected, abs=1e-6)


def test_pixel_auroc_float64_not_float32_representable():
    # Distinct in float64, merged by a float32 cast: must still equal sklearn.
    rng = np.random.default_rng(3)
    scores = 1.0 + 1e-10 * rng.integers(0, 50, size=(4, 8, 8))
    masks = rng.random(scores.shape) < 0.4
    assert len(np.unique(scores.astype(np.float32))) < len(np.unique(scores))
    expected = roc_auc_score(masks.ravel(), scores.ravel())
    assert pixel_auroc(scores, masks, chunk_size=9) == pytest.approx(expected, abs=1e-12)


def test_pixel_auroc_input_dtypes():
    scores, masks = _random_maps(4, 9)
    expected = roc_auc_score(masks.ravel(), scores.ravel())
    assert pixel_auroc(scores.astype(np.float64), masks.astype(np.int64)) == pytest.approx(
        expected, abs=1e-12
    )
    assert pixel_auroc(scores, masks.astype(np.float32)) == pytest.approx(expected, abs=1e-12)
    ints = (scores * 9).round().astype(np.int32)
    assert pixel_auroc(ints, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), ints.ravel()), abs=1e-12
    )
    half = scores.astype(np.float16)
    assert pixel_auroc(half, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), half.astype(np.float32).ravel()), abs=1e-12
    )
    bf16 = jnp.asarray(scores, dtype=jnp.bfloat16)
    assert pixel_auroc(bf16, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), np.asarray(bf16, np.float32).ravel()), abs=1e-12
    )


def test_negative_zero_ties_with_zero():
    scores = np.array([[-0.0, 0.0, 0.0, -0.0, 1.0, -1.0]], np.float32)
    masks = np.array([[1, 0, 1, 0, 1, 0]])
    assert pixel_auroc(scores, masks) == pytest.approx(
        roc_auc_score(masks.ravel(), scores.ravel()), abs=1e-12
    )


def test_pixel_auroc_degenerate_cases():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    # constant scores -> 0.5
    assert pixel_auroc(np.full(masks.shape, 3.0, np.float32), masks) == 0.5
    # perfect separation -> 1, inverted -> 0
    assert pixel_auroc(masks.astype(np.float32), masks) == 1.0
    assert pixel_auroc(-masks.astype(np.float32), masks) == 0.0
    assert pixel_auroc(masks.astype(np.float32), masks, method="histogram") == 1.0
    with pytest.raises(ValueError, match="AUROC undefined: masks contain no anomalous pixels"):
        pixel_auroc(np.random.default_rng(0).random(masks.shape), np.zeros(masks.shape))
    with pytest.raises(ValueError, match="AUROC undefined: masks contain no normal pixels"):
        pixel_auroc(np.random.default_rng(0).random(masks.shape), np.ones(masks.shape))


def test_bad_inputs_raise_clear_errors():
    scores, masks = _random_maps(0, None, shape=(2, 5, 5))
    with pytest.raises(ValueError, match="shape mismatch"):
        pixel_auroc(scores, masks[:, :4])
    nan_scores = scores.copy()
    nan_scores[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 NaN"):
        pixel_auroc(nan_scores, masks)
    inf_scores = scores.copy()
    inf_scores[1, 2, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        aupro(inf_scores, masks)
    with pytest.raises(ValueError, match="finite"):
        pixel_auroc(jnp.asarray(nan_scores), masks, backend="jax")
    bad = masks.astype(np.uint8)
    bad[0, 0, 0] = 2
    with pytest.raises(ValueError, match=r"binary.*\[2\]"):
        pixel_auroc(scores, bad)
    nan_mask = masks.astype(np.float32)
    nan_mask[0, 0, 1] = np.nan
    with pytest.raises(ValueError, match="binary"):
        best_iou(scores, nan_mask)
    with pytest.raises(ValueError, match="real numbers"):
        pixel_auroc(scores.astype(np.complex64), masks)
    with pytest.raises(ValueError, match="empty"):
        pixel_auroc(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)))
    with pytest.raises(ValueError, match="method"):
        pixel_auroc(scores, masks, method="grid")
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(scores, masks, max_fpr=0.0)
    with pytest.raises(ValueError, match="connectivity"):
        aupro(scores, masks, connectivity=6)
    with pytest.raises(ValueError, match="IoU undefined"):
        best_iou(scores, np.zeros_like(masks))


# -------------------------------------------------------------------- ROC curve


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("levels", [4, None])
@pytest.mark.parametrize("drop_intermediate", [False, True])
def test_roc_curve_points_match_sklearn(seed, levels, drop_intermediate):
    scores, masks = _random_maps(seed, levels)
    fpr, tpr, thr = roc_curve(scores, masks, drop_intermediate=drop_intermediate, chunk_size=13)
    e_fpr, e_tpr, e_thr = sk_roc_curve(
        masks.ravel(), scores.ravel(), drop_intermediate=drop_intermediate
    )
    np.testing.assert_allclose(fpr, e_fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(tpr, e_tpr, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(thr, e_thr.astype(np.float64))


# ---------------------------------------------------------------------- best IoU


def test_best_iou_hand_computed():
    scores = np.array([[[0.9, 0.8, 0.8, 0.3, 0.1]]], np.float32)
    masks = np.array([[[1, 1, 0, 1, 0]]])
    # t=0.9: 1/3; t=0.8: TP 2 FP 1 FN 1 -> 2/4; t=0.3: TP 3 FP 1 -> 3/4; t=0.1: 3/5.
    assert best_iou(scores, masks) == pytest.approx(0.75, abs=1e-12)
    assert best_iou(np.ones((1, 2, 2)), np.ones((1, 2, 2))) == 1.0  # all anomalous


def _brute_force_best_iou(scores: np.ndarray, masks: np.ndarray) -> float:
    s, m = scores.ravel(), masks.ravel().astype(bool)
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        inter = np.sum(pred & m)
        union = np.sum(pred | m)
        best = max(best, inter / union)
    return best


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("levels", [3, 11, None])
def test_best_iou_matches_brute_force(seed, levels):
    scores, masks = _random_maps(seed, levels, shape=(3, 9, 9))
    expected = _brute_force_best_iou(scores, masks)
    assert best_iou(scores, masks, chunk_size=5) == pytest.approx(expected, abs=1e-12)
    hist = best_iou(scores, masks, method="histogram", n_bins=8)
    assert hist <= expected + 1e-12  # histogram tries a subset of thresholds


# ------------------------------------------------------------------------- AUPRO


def _hand_case() -> tuple[np.ndarray, np.ndarray]:
    """One 3x6 image: region A (2x2 block, 4 px) and region B (1 px), 13 normal px."""
    masks = np.zeros((1, 3, 6), np.uint8)
    masks[0, 0:2, 0:2] = 1  # A
    masks[0, 0, 4] = 1  # B, not 8-connected to A
    scores = np.zeros((1, 3, 6), np.float32)
    scores[0, 0, 0], scores[0, 0, 1], scores[0, 1, 0], scores[0, 1, 1] = 0.9, 0.9, 0.5, 0.1
    scores[0, 0, 4] = 0.5
    scores[0, 2, 0] = 0.7  # normal
    scores[0, 2, 5] = 0.5  # normal
    return scores, masks


def test_pro_curve_hand_computed():
    # Thresholds 0.9, 0.7, 0.5, 0.1, 0.0 give PRO (mean of A, B overlaps) and FPR (of 13):
    # 0.9: (.5+0)/2=.25, 0 | 0.7: .25, 1/13 | 0.5: (.75+1)/2=.875, 2/13 | 0.1: 1, 2/13
    # 0.0: 1, 1.
    scores, masks = _hand_case()
    fpr, pro, thr = pro_curve(scores, masks, chunk_size=4)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 13, 2 / 13, 2 / 13, 1], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 0.25, 0.25, 0.875, 1, 1], atol=1e-12)
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.7, 0.5, 0.1, 0.0], rtol=1e-7)


def test_aupro_hand_computed():
    scores, masks = _hand_case()
    # max_fpr=0.3: 0.25/13 + (1/13)(0.25+0.875)/2 + (0.3 - 2/13) * 1, divided by 0.3.
    expected = (0.25 / 13 + (1 / 13) * 1.125 / 2 + (0.3 - 2 / 13)) / 0.3
    assert aupro(scores, masks) == pytest.approx(expected, abs=1e-12)
    # max_fpr=0.1 falls inside the (1/13, .25) -> (2/13, .875) segment: PRO(0.1) =
    # .25 + .625 * 0.3 = .4375; area = .25/13 + (0.3/13) * (.25 + .4375)/2.
    expected_01 = (0.25 / 13 + (0.3 / 13) * (0.25 + 0.4375) / 2) / 0.1
    assert aupro(scores, masks, max_fpr=0.1, chunk_size=3) == pytest.approx(expected_01, abs=1e-12)
    # max_fpr=1: the whole curve.
    full = 0.25 / 13 + (1 / 13) * 1.125 / 2 + (1 - 2 / 13)
    assert aupro(scores, masks, max_fpr=1.0) == pytest.approx(full, abs=1e-12)


def test_aupro_connectivity_and_images_are_separate():
    # Two diagonal pixels: one region with 8-connectivity, two with 4-connectivity.
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = 1
    masks[1, 0, 0] = 1  # same position in another image: its own region
    scores = np.zeros(masks.shape, np.float32)
    scores[0, 0, 0] = 1.0  # only one of the diagonal pixels is found
    scores[1, 0, 0] = 1.0
    # At t=1 (FPR 0): 8-conn regions {diag pair: 1/2, img1: 1} -> PRO 0.75;
    # 4-conn regions {1, 0, 1} -> PRO 2/3. Then t=0: (1, 1).
    fpr8, pro8, _ = pro_curve(scores, masks, connectivity=8)
    fpr4, pro4, _ = pro_curve(scores, masks, connectivity=4)
    np.testing.assert_allclose(pro8, [0, 0.75, 1], atol=1e-12)
    np.testing.assert_allclose(pro4, [0, 2 / 3, 1], atol=1e-12)
    np.testing.assert_allclose(fpr8, [0, 0, 1], atol=1e-12)
    assert aupro(scores, masks, connectivity=8) == pytest.approx(
        (0.3 * (0.75 + (0.75 + 0.25 * 0.3))) / 2 / 0.3, abs=1e-12
    )


def _mvtec_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid up to x_max with a linearly interpolated end point (MVTec convention)."""
    area = 0.0
    for i in range(len(x) - 1):
        x0, x1, y0, y1 = x[i], x[i + 1], y[i], y[i + 1]
        if x0 >= x_max:
            break
        if x1 > x_max:
            y1 = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
            x1 = x_max
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def _brute_force_aupro(scores, masks, max_fpr, connectivity=8):
    structure = np.ones((3, 3)) if connectivity == 8 else None  # None = 4-connectivity
    regions = []
    for img in range(masks.shape[0]):
        lab, n = ndimage.label(masks[img], structure=structure)
        regions += [(img, lab == k) for k in range(1, n + 1)]
    normal = masks == 0
    xs, ys = [0.0], [0.0]
    for t in np.unique(scores)[::-1]:
        pred = scores >= t
        xs.append(np.sum(pred & normal) / np.sum(normal))
        ys.append(np.mean([np.mean(pred[img][r]) for img, r in regions]))
    return _mvtec_trapezoid(np.array(xs), np.array(ys), max_fpr) / max_fpr


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("levels", [4, None])
@pytest.mark.parametrize("max_fpr", [0.05, 0.3, 1.0])
def test_aupro_matches_brute_force(seed, levels, max_fpr):
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 10, 10), np.uint8)
    for img in range(3):  # a few blobs of random size per image
        for _ in range(rng.integers(0, 3)):
            r, c, h, w = rng.integers(0, 8), rng.integers(0, 8), *rng.integers(1, 4, 2)
            masks[img, r : r + h, c : c + w] = 1
    masks[0, 9, 9] = 1
    scores = (rng.random(masks.shape) + 0.5 * masks).astype(np.float32)
    if levels is not None:
        scores = (np.round(scores * levels) / levels).astype(np.float32)
    expected = _brute_force_aupro(scores, masks, max_fpr)
    got = aupro(scores, masks, max_fpr=max_fpr, chunk_size=7)
    assert got == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= got <= 1.0
    got4 = aupro(scores, masks, max_fpr=max_fpr, connectivity=4, chunk_size=1 << 21)
    assert got4 == pytest.approx(_brute_force_aupro(scores, masks, max_fpr, 4), abs=1e-9)
    hist = aupro(scores, masks, max_fpr=max_fpr, method="histogram", n_bins=1 << 16)
    assert hist == pytest.approx(expected, abs=1e-3)


def test_aupro_perfect_and_worst_maps():
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[0, 1:3, 1:4] = 1
    masks[1, 5:8, 6] = 1
    assert aupro(masks.astype(np.float32), masks) == 1.0
    assert aupro(-masks.astype(np.float32), masks) == 0.0
    assert aupro(masks.astype(np.float32)[0], masks[0]) == 1.0  # (H, W) accepted
    with pytest.raises(ValueError, match="AUPRO undefined"):
        aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)))


# --------------------------------------------------------------------- histogram


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_bins", [4, 64, 1 << 20])
def test_histogram_auroc_within_bound(seed, n_bins):
    scores, masks = _random_maps(seed, None)
    exact = roc_auc_score(masks.ravel(), scores.ravel())
    hist = pixel_auroc(scores, masks, method="histogram", n_bins=n_bins, chunk_size=100)
    bound = auroc_histogram_error_bound(scores, masks, n_bins=n_bins)
    assert abs(hist - exact) <= bound + 1e-12
    assert bound < 0.5


def test_histogram_is_exact_on_few_levels():
    scores, masks = _random_maps(1, 6)
    exact = roc_auc_score(masks.ravel(), scores.ravel())
    assert pixel_auroc(scores, masks, method="histogram", n_bins=4096) == pytest.approx(
        exact, abs=1e-12
    )
    # The bound is conservative: exactly tied pairs in a bin count too, though exact.
    assert auroc_histogram_error_bound(scores, masks, n_bins=4096) > 0.0


# ----------------------------------------------------------------------- image AUROC


@pytest.mark.parametrize("seed", SEEDS)
def test_image_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=40) + labels, 1)  # ties
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    with pytest.raises(ValueError, match="labels contain no anomalous images"):
        image_auroc(scores, np.zeros(40))
    with pytest.raises(ValueError, match="1-D"):
        image_auroc(scores.reshape(4, 10), labels.reshape(4, 10))
