"""ROC metrics: pooled pixel AUROC, the ROC curve, image AUROC, the histogram's error bound.

The pixel AUROC pools every pixel of every test image (raw scores, never normalized per
image) and is exact and tie-correct: ties count half, the Mann-Whitney U statistic, equal to
``sklearn.metrics.roc_auc_score``. How the counts are obtained is in
:mod:`vae_xai.metrics.localization.pooled`.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

from vae_xai.metrics.localization.pooled import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_N_BINS,
    Backend,
    Method,
    _auroc_from_groups,
    _check_chunk_size,
    _check_method,
    _exact_groups,
    _groups,
    _histogram_groups,
    _prepare,
    _require_both,
)


def pixel_auroc(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    method: Method = "exact",
    n_bins: int = DEFAULT_N_BINS,
    backend: Backend = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Pooled pixel-level ROC AUC.

    Args:
      scores: (N, H, W) (any shape) real anomaly scores; higher = more anomalous. Raw
        values, pooled over all images: no per-image normalization.
      masks: same shape, ground truth in {0, 1} (bool, int or float).
      method: "exact" (sort; equal to ``sklearn.metrics.roc_auc_score`` including ties) or
        "histogram" (``n_bins`` equal-width bins, error <= auroc_histogram_error_bound).
      n_bins: number of histogram bins for ``method="histogram"``.
      backend: where the exact sort runs: "numpy", "jax" (``jax.lax.sort`` on the scores'
        device) or "auto" (jax for arrays on an accelerator, else numpy).
      chunk_size: pixels per streaming chunk (bounds temporary memory).

    Returns:
      AUROC in [0, 1]; 0.5 for constant scores.

    Raises:
      ValueError: shape mismatch, NaN/inf scores, non-binary masks, or masks with no
        anomalous (or no normal) pixels, where the AUROC is undefined.
    """
    _check_method(method, n_bins, backend)
    chunk = _check_chunk_size(chunk_size)
    names = ("scores", "masks")
    px, _ = _prepare(scores, masks, names=names, keep_on_device=method == "exact", chunk=chunk)
    _require_both(px, "AUROC", names, "pixels")
    return _auroc_from_groups(_groups(px, method, n_bins, backend, chunk), px.n_pos, px.n_neg)


def image_auroc(image_scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-level ROC AUC.

    Args:
      image_scores: (N,) real per-image anomaly scores.
      labels: (N,) in {0, 1}; 1 = anomalous image.

    Returns:
      AUROC (exact, ties count half; equal to ``sklearn.metrics.roc_auc_score``).

    Raises:
      ValueError: ``image_scores`` not 1-D, non-finite scores, non-binary labels, or
        labels of a single class.
    """
    names = ("image_scores", "labels")
    if np.ndim(image_scores) != 1:
        raise ValueError(f"image_scores must be 1-D (N,), got shape {np.shape(image_scores)}")
    px, _ = _prepare(
        image_scores, labels, names=names, keep_on_device=False, chunk=DEFAULT_CHUNK_SIZE
    )
    _require_both(px, "AUROC", names, "images")
    groups = _exact_groups(px, "numpy", DEFAULT_CHUNK_SIZE)
    return _auroc_from_groups(groups, px.n_pos, px.n_neg)


def roc_curve(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    drop_intermediate: bool = False,
    method: Method = "exact",
    n_bins: int = DEFAULT_N_BINS,
    backend: Backend = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled pixel ROC curve with the points of ``sklearn.metrics.roc_curve``.

    Args:
      scores: as in :func:`pixel_auroc`.
      masks: as in :func:`pixel_auroc`.
      drop_intermediate: False (default here) keeps one point per distinct score, i.e.
        sklearn's ``drop_intermediate=False``; True drops collinear points with
        sklearn's rule (its default).
      method: as in :func:`pixel_auroc`.
      n_bins: as in :func:`pixel_auroc`.
      backend: as in :func:`pixel_auroc`.
      chunk_size: as in :func:`pixel_auroc`.

    Returns:
      fpr, tpr: (D+1,) float64, starting at (0, 0); thresholds: (D+1,) float64, the
      distinct scores in decreasing order (``scores >= thresholds[i]`` gives point i),
      preceded by +inf. For ``method="histogram"`` the thresholds are the bin lower edges.
      Memory: O(D) for D distinct scores (up to n for continuous scores).

    Raises:
      ValueError: as :func:`pixel_auroc`.
    """
    _check_method(method, n_bins, backend)
    chunk = _check_chunk_size(chunk_size)
    names = ("scores", "masks")
    px, _ = _prepare(scores, masks, names=names, keep_on_device=method == "exact", chunk=chunk)
    _require_both(px, "ROC curve", names, "pixels")
    batches = list(_groups(px, method, n_bins, backend, chunk))
    thresholds = np.concatenate([g.thresholds for g in batches])
    tps = np.cumsum(np.concatenate([g.n_pos for g in batches]))
    fps = np.cumsum(np.concatenate([g.n_neg for g in batches]))
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def auroc_histogram_error_bound(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    n_bins: int = DEFAULT_N_BINS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Worst-case ``|pixel_auroc(method="histogram") - pixel_auroc(method="exact")|``.

    Only anomalous/normal pairs that share a bin can be mis-ordered by the histogram,
    each by half a pair: bound = 0.5 * sum_b pos_b * neg_b / (P * N). Conservative: pairs
    with exactly equal scores are counted although the histogram gets them right.

    Args:
      scores: as in :func:`pixel_auroc`.
      masks: as in :func:`pixel_auroc`.
      n_bins: as in :func:`pixel_auroc` with ``method="histogram"``.
      chunk_size: as in :func:`pixel_auroc`.

    Returns:
      The bound, in [0, 0.5].
    """
    _check_method("histogram", n_bins, "numpy")
    chunk = _check_chunk_size(chunk_size)
    names = ("scores", "masks")
    px, _ = _prepare(scores, masks, names=names, keep_on_device=False, chunk=chunk)
    _require_both(px, "AUROC", names, "pixels")
    pairs = 0
    for g in _histogram_groups(px, int(n_bins), chunk):
        pairs += int(np.dot(g.n_pos, g.n_neg))
    return pairs / (2 * px.n_pos * px.n_neg)
