"""Evaluation metrics.

``localization``: anomaly-localization metrics on arbitrary score maps (pooled pixel
AUROC, ROC curve, best IoU, MVTec-AD AUPRO, image AUROC). Their public functions are
re-exported here. ``disentanglement``: FactorVAE score, beta-VAE score and MIG over any
dataset with ground-truth factors. Each is a package with one metric family per module.
"""

from vae_xai.metrics.localization import (
    aupro,
    auroc_histogram_error_bound,
    best_iou,
    image_auroc,
    pixel_auroc,
    pro_curve,
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
