"""Anomaly-localization metrics for arbitrary score maps.

All pixel metrics pool every pixel of every test image of a category (the MVTec-AD
convention used by Liu et al., CVPR 2020): raw scores, never normalized per image.

Public API (all return host numpy / Python floats), one family per module:

* :func:`pixel_auroc` -- pooled pixel ROC AUC, exact and tie-correct (ties count half, the
  Mann-Whitney U statistic, equal to ``sklearn.metrics.roc_auc_score``); :func:`roc_curve`
  -- ``(fpr, tpr, thresholds)`` with sklearn's points; :func:`image_auroc` -- AUROC of
  per-image scores; :func:`auroc_histogram_error_bound` -- the guaranteed error of
  ``method="histogram"`` (:mod:`~vae_xai.metrics.localization.roc`).
* :func:`best_iou` -- best IoU of ``scores >= t`` vs the masks over every distinct ``t``
  (:mod:`~vae_xai.metrics.localization.iou`).
* :func:`pro_curve` / :func:`aupro` -- MVTec-AD per-region overlap (Bergmann et al. 2021)
  (:mod:`~vae_xai.metrics.localization.pro`).

All of them are computed from the pooled counts per distinct score value that
:mod:`~vae_xai.metrics.localization.pooled` gets from one sort (or a histogram); its
docstring has the algorithm and the memory it needs.
"""

from vae_xai.metrics.localization.iou import best_iou

# The option types and defaults are public attributes, but not part of ``__all__``.
from vae_xai.metrics.localization.pooled import DEFAULT_CHUNK_SIZE as DEFAULT_CHUNK_SIZE
from vae_xai.metrics.localization.pooled import DEFAULT_N_BINS as DEFAULT_N_BINS
from vae_xai.metrics.localization.pooled import Backend as Backend
from vae_xai.metrics.localization.pooled import Method as Method
from vae_xai.metrics.localization.pro import aupro, pro_curve
from vae_xai.metrics.localization.roc import (
    auroc_histogram_error_bound,
    image_auroc,
    pixel_auroc,
    roc_curve,
)

__all__ = [
    "aupro",
    "auroc_histogram_error_bound",
    "best_iou",
    "image_auroc",
    "pixel_auroc",
    "pro_curve",
    "roc_curve",
]
