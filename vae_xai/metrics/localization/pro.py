"""MVTec-AD's per-region overlap: the PRO curve and the normalized area under it (AUPRO).

Regions are the connected components of each image's mask (Bergmann et al., IJCV 2021);
every region counts the same however large it is, so small defects weigh as much as big ones.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike
from scipy import ndimage

from vae_xai.metrics.localization.pooled import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_N_BINS,
    Backend,
    Method,
    _check_chunk_size,
    _check_method,
    _groups,
    _Pixels,
    _prepare,
    _require_both,
    _sweep,
)


def _region_pixels(
    scores: ArrayLike,
    masks: ArrayLike,
    connectivity: int,
    method: str,
    chunk: int,
) -> _Pixels:
    """Like :func:`_prepare`, with codes = per-image connected-component ids and the PRO
    weight 1 / (R * |region|) per region (so summed weights over pixels >= t = PRO(t))."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    names = ("scores", "masks")
    px, shape = _prepare(scores, masks, names=names, keep_on_device=method == "exact", chunk=chunk)
    if len(shape) not in (2, 3):
        raise ValueError(f"AUPRO needs (N, H, W) or (H, W) maps, got shape {shape}")
    _require_both(px, "AUPRO", names, "pixels")
    image = np.ones((3, 3), bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = image  # no connections across images
    mask3 = px.codes.reshape((1, *shape) if len(shape) == 2 else shape)
    labels, n_regions = ndimage.label(mask3, structure=structure)
    labels = labels.reshape(-1)
    sizes = np.bincount(labels, minlength=n_regions + 1)
    weights = np.zeros(n_regions + 1, np.float64)
    weights[1:] = 1.0 / (n_regions * sizes[1:].astype(np.float64))
    return px._replace(codes=labels, weights=weights)


def pro_curve(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    connectivity: int = 8,
    method: Method = "exact",
    n_bins: int = DEFAULT_N_BINS,
    backend: Backend = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-region-overlap curve of MVTec-AD (Bergmann et al., IJCV 2021).

    Ground-truth regions are the connected components of each image's mask (8- or
    4-connectivity, never across images). PRO(t) = mean over all regions of the fraction
    of the region's pixels with ``score >= t``; FPR(t) = fraction of all normal pixels
    with ``score >= t``.

    Args:
      scores: (N, H, W) or (H, W) real scores.
      masks: same shape, {0, 1}.
      connectivity: 8 or 4, how mask pixels join into regions.
      method: ``"exact"`` or ``"histogram"``, as in
        :func:`~vae_xai.metrics.localization.pixel_auroc`.
      n_bins: histogram bins for ``method="histogram"``.
      backend: where the exact sort runs (see :func:`~vae_xai.metrics.localization.pixel_auroc`).
      chunk_size: pixels per streaming chunk (bounds temporary memory).

    Returns:
      fpr, pro, thresholds: (D+1,) float64, one point per distinct score in decreasing
      threshold order, preceded by (0, 0, +inf); the last point is (1, 1).

    Raises:
      ValueError: as :func:`~vae_xai.metrics.localization.pixel_auroc`, a connectivity
        other than 4 or 8, or maps that are not ``(N, H, W)`` / ``(H, W)``.
    """
    chunk = _check_chunk_size(chunk_size)
    _check_method(method, n_bins, backend)
    px = _region_pixels(scores, masks, connectivity, method, chunk)
    batches = list(_groups(px, method, n_bins, backend, chunk))
    fps = np.cumsum(np.concatenate([g.n_neg for g in batches]))
    tps = np.cumsum(np.concatenate([g.n_pos for g in batches]))
    pro = np.cumsum(np.concatenate([g.w_pos for g in batches]))
    pro[tps == px.n_pos] = 1.0  # every region fully covered: exactly 1, not 1 - eps
    thresholds = np.concatenate([g.thresholds for g in batches])
    return (
        np.r_[0.0, fps / px.n_neg],
        np.r_[0.0, np.minimum(pro, 1.0)],
        np.r_[np.inf, thresholds],
    )


def aupro(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    max_fpr: float = 0.3,
    connectivity: int = 8,
    method: Method = "exact",
    n_bins: int = DEFAULT_N_BINS,
    backend: Backend = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Normalized area under the PRO curve up to ``max_fpr`` (MVTec-AD's AU-PRO).

    Integrates PRO over FPR in [0, max_fpr] with the trapezoidal rule over *every*
    distinct threshold (exact, no threshold grid; tied scores form a single point, as in
    the MVTec evaluation code), interpolating the PRO linearly at ``max_fpr``, and divides
    by ``max_fpr`` so a perfect map scores 1. Connectivity defaults to 8 (the official
    code's ``np.ones((3, 3))`` structure). The stream stops once FPR exceeds ``max_fpr``.

    Args:
      scores: (N, H, W) or (H, W) real scores.
      masks: same shape, {0, 1}.
      max_fpr: integration limit in (0, 1].
      connectivity: 8 or 4, as in :func:`pro_curve`.
      method: as in :func:`pro_curve`.
      n_bins: as in :func:`pro_curve`.
      backend: as in :func:`pro_curve`.
      chunk_size: as in :func:`pro_curve`.

    Returns:
      AUPRO in [0, 1].

    Raises:
      ValueError: ``max_fpr`` outside (0, 1], or as :func:`pro_curve`.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    chunk = _check_chunk_size(chunk_size)
    _check_method(method, n_bins, backend)
    px = _region_pixels(scores, masks, connectivity, method, chunk)
    area = 0.0
    x_prev, y_prev = 0.0, 0.0  # the curve starts at (0, 0) (threshold +inf)
    pro0 = 0.0
    for g, tp, fp in _sweep(_groups(px, method, n_bins, backend, chunk)):
        x = np.r_[x_prev, fp / px.n_neg]
        pro = np.minimum(pro0 + np.cumsum(g.w_pos), 1.0)
        pro[tp == px.n_pos] = 1.0  # every region fully covered: exactly 1, not 1 - eps
        y = np.r_[y_prev, pro]
        x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
        inside = x1 <= max_fpr
        full = np.where(inside, (x1 - x0) * (y0 + y1) * 0.5, 0.0)
        area += float(np.sum(full))
        cross = np.flatnonzero((x0 < max_fpr) & ~inside)
        if cross.size:  # the segment that crosses max_fpr: interpolate, then stop
            i = cross[0]
            y_m = y0[i] + (y1[i] - y0[i]) * (max_fpr - x0[i]) / (x1[i] - x0[i])
            area += (max_fpr - x0[i]) * (y0[i] + y_m) * 0.5
            break
        if x[-1] >= max_fpr:
            break
        x_prev, y_prev, pro0 = float(x[-1]), float(y[-1]), pro0 + float(np.sum(g.w_pos))
    return min(max(area / max_fpr, 0.0), 1.0)
