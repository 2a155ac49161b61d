"""Figures over produced maps: pooled pixel ROC curves and per-group overlays (host side)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

import numpy as np
from jax.typing import ArrayLike

from vae_xai import metrics, plots

__all__ = ["save_overlays", "save_roc_figure"]


def save_roc_figure(
    path: str | pathlib.Path,
    maps_by_name: Mapping[str, ArrayLike],
    masks: ArrayLike,
    *,
    title: str | None = None,
) -> pathlib.Path:
    """Pooled pixel ROC curves of several map types on one PNG.

    Args:
      path: the PNG to write.
      maps_by_name: ``{name: (N, H, W) maps}``, one curve each (AUROC in the legend).
      masks: ``(N, H, W)`` ground truth.
      title: figure title.

    Returns:
      The path written.
    """
    masks = np.asarray(masks).astype(bool)
    curves = {}
    for name, maps in maps_by_name.items():
        fpr, tpr, _ = metrics.roc_curve(np.asarray(maps, np.float32), masks, drop_intermediate=True)
        curves[name] = (fpr, tpr, float(metrics.pixel_auroc(np.asarray(maps, np.float32), masks)))
    return plots.save_roc_curves(path, curves, title=title)


def save_overlays(
    folder: str | pathlib.Path,
    images: ArrayLike,
    masks: ArrayLike,
    groups: ArrayLike,
    maps_by_name: Mapping[str, ArrayLike],
    *,
    per_group: int = 4,
    prefix: str = "overlay",
    title: str | None = None,
) -> list[pathlib.Path]:
    """One PNG per group (defect type): rows input, mask, then each map over the input.

    Heat maps share one colour scale per map type over the whole test set (the 99.5th
    percentile), so that colours are comparable across images and defect types, as the
    pooled metrics are.

    Args:
      folder: where the PNGs go.
      images: ``(N, H, W, C)`` in [0, 1].
      masks: ``(N, H, W)``.
      groups: ``(N,)`` group of each image; one figure per distinct group, sorted.
      maps_by_name: ``{name: (N, H, W) maps}``, one row each.
      per_group: the first images of each group shown (columns).
      prefix: file names are ``<prefix>_<group>.png``.
      title: prefix of each figure's title.

    Returns:
      The paths written.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    groups = np.asarray(groups).astype(str)
    vmax = {
        name: float(np.percentile(np.asarray(m), 99.5)) or 1.0 for name, m in maps_by_name.items()
    }
    paths = []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)[:per_group]
        rows: dict[str, list[np.ndarray]] = {
            "input": [images[i] for i in idx],
            "mask": [masks[i].astype(np.float32) for i in idx],
        }
        for name, maps in maps_by_name.items():
            maps = np.asarray(maps)
            rows[name] = [
                np.clip(plots.overlay(images[i], maps[i], vmax=vmax[name]), 0.0, 1.0) for i in idx
            ]
        paths.append(
            plots.save_image_rows(
                pathlib.Path(folder) / f"{prefix}_{g}.png",
                rows,
                col_titles=[str(i) for i in idx],
                title=f"{title + ': ' if title else ''}{g}",
            )
        )
    return paths
