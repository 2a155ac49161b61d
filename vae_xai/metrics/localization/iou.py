"""Best IoU: the pooled IoU of ``scores >= t`` against the masks at the best threshold t.

The thresholds are those of the ROC sweep (every distinct score), as in Liu et al. (CVPR
2020), Table 2.
"""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike

from vae_xai.metrics.localization.pooled import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_N_BINS,
    Backend,
    Method,
    _check_chunk_size,
    _check_method,
    _groups,
    _prepare,
    _sweep,
)


def best_iou(
    scores: ArrayLike,
    masks: ArrayLike,
    *,
    method: Method = "exact",
    n_bins: int = DEFAULT_N_BINS,
    backend: Backend = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> float:
    """Best pooled IoU of the binarized map ``scores >= t`` against the masks.

    Sweeps every distinct score value t (the ROC thresholds) and returns
    ``max_t TP / (TP + FP + FN)`` = ``max_t TP(t) / (P + FP(t))`` with all pixels of all
    images pooled. For ``method="histogram"`` only bin edges are tried, a lower bound.

    Args:
      scores: real anomaly scores, e.g. ``(N, H, W)``.
      masks: same shape, ground truth in {0, 1}.
      method: ``"exact"`` or ``"histogram"``, as in
        :func:`~vae_xai.metrics.localization.pixel_auroc`.
      n_bins: histogram bins for ``method="histogram"``.
      backend: where the exact sort runs (see :func:`~vae_xai.metrics.localization.pixel_auroc`).
      chunk_size: pixels per streaming chunk (bounds temporary memory).

    Returns:
      The best IoU in [0, 1].

    Raises:
      ValueError: as :func:`pixel_auroc`; IoU is undefined without anomalous pixels
        (all-anomalous masks are fine: the best IoU is then 1).
    """
    _check_method(method, n_bins, backend)
    chunk = _check_chunk_size(chunk_size)
    names = ("scores", "masks")
    px, _ = _prepare(scores, masks, names=names, keep_on_device=method == "exact", chunk=chunk)
    if px.n_pos == 0:
        raise ValueError("IoU undefined: masks contain no anomalous pixels")
    best = 0.0
    for _, tp, fp in _sweep(_groups(px, method, n_bins, backend, chunk)):
        best = max(best, float(np.max(tp / (px.n_pos + fp))))
    return best
