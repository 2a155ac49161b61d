"""Host-side figures: attention overlays, per-latent grids, ROC curves (matplotlib, Agg).

Every function takes NumPy-convertible arrays, writes one PNG and returns its path; none of
them needs a display.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numpy.typing import ArrayLike  # noqa: E402

__all__ = [
    "overlay",
    "save_curves",
    "save_figure",
    "save_image_rows",
    "save_latent_grid",
    "save_roc_curves",
]


def save_figure(fig: Any, path: str | pathlib.Path) -> pathlib.Path:
    """Write a matplotlib figure to ``path`` (110 dpi) and close it.

    With several processes (:mod:`vae_xai.distributed`) only process 0 writes; the others
    close the figure and return the path unwritten, as :func:`vae_xai.workdir.write_json_atomic`
    does for JSON.

    Args:
      fig: the figure.
      path: the PNG to write.

    Returns:
      ``path``.
    """
    path = pathlib.Path(path)
    if jax.process_index() == 0:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _image(x: ArrayLike) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    return np.clip(x, 0.0, 1.0)


def _normalize(m: np.ndarray, vmax: float | None = None) -> np.ndarray:
    m = np.asarray(m, np.float32)
    top = float(np.max(m)) if vmax is None else vmax
    return m / top if top > 0 else np.zeros_like(m)


def overlay(image: ArrayLike, heat: ArrayLike, *, alpha: float = 0.5, vmax: float | None = None):
    """Blend a heat map (jet colormap) over a grayscale or RGB image.

    Args:
      image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` in [0, 1].
      heat: ``(H, W)`` non-negative map.
      alpha: the heat map's weight.
      vmax: the value shown as the top of the colormap; ``None``: the map's maximum.

    Returns:
      RGB ``(H, W, 3)``.
    """
    img = _image(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    heat_rgb = plt.get_cmap("jet")(_normalize(heat, vmax))[..., :3]
    return (1 - alpha) * img + alpha * heat_rgb


def save_image_rows(
    path: str | pathlib.Path,
    rows: Mapping[str, Sequence[ArrayLike]],
    *,
    col_titles: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = "gray",
    cell: float = 1.4,
) -> pathlib.Path:
    """Save a grid with one labelled row per entry of ``rows``; each cell an image or RGB array.

    Args:
      path: the PNG to write (its folder is created).
      rows: ``{row label: [image, ...]}``; rows may have different lengths.
      col_titles: titles of the columns of the first row.
      title: the figure's title.
      cmap: colormap of single-channel cells.
      cell: size of one cell in inches.

    Returns:
      ``path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(rows)
    ncols = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(
        len(names), ncols, figsize=(cell * ncols + 1.2, cell * len(names) + 0.6), squeeze=False
    )
    for r, name in enumerate(names):
        for c in range(ncols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(rows[name]):
                cellv = np.asarray(rows[name][c], np.float32)
                if cellv.ndim == 3 and cellv.shape[-1] == 1:
                    cellv = cellv[..., 0]
                ax.imshow(cellv, cmap=cmap if cellv.ndim == 2 else None)
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
            if r == 0 and col_titles is not None and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def save_latent_grid(
    path: str | pathlib.Path,
    images: ArrayLike,
    maps: ArrayLike,
    *,
    latent_ids: Sequence[int] | None = None,
    latent_labels: Sequence[str] | None = None,
    title: str | None = None,
    alpha: float = 0.55,
) -> pathlib.Path:
    """Save per-latent attention for several samples (paper Fig. 1).

    Row 0 shows the inputs, then one row per latent dim with each map overlaid on its input.
    A latent's maps share one colour scale across samples so that consistency across samples
    is visible.

    Args:
      path: the PNG to write.
      images: ``(N, H, W[, C])``.
      maps: ``(N, D, H, W)``, upsampled to the image size.
      latent_ids: the latent dims to show; default all.
      latent_labels: the rows' labels; default ``z<i>``.
      title: the figure's title.
      alpha: the maps' weight in the overlay.

    Returns:
      ``path``.

    Raises:
      ValueError: ``maps`` is not ``(N, D, H, W)`` for the ``N`` images.
    """
    images = np.asarray(images)
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps must be (N, D, H, W) for N={images.shape[0]}; got {maps.shape}")
    ids = list(range(maps.shape[1])) if latent_ids is None else list(latent_ids)
    rows: dict[str, list[np.ndarray]] = {"input": [_image(im) for im in images]}
    labels = [f"z{i}" for i in ids] if latent_labels is None else list(latent_labels)
    if len(labels) != len(ids):
        raise ValueError(f"{len(labels)} latent_labels for {len(ids)} latents")
    for i, label in zip(ids, labels, strict=True):
        vmax = float(maps[:, i].max())
        rows[label] = [
            overlay(images[n], maps[n, i], alpha=alpha, vmax=vmax) for n in range(len(images))
        ]
    return save_image_rows(path, rows, title=title, cell=1.1)


def save_roc_curves(
    path: str | pathlib.Path,
    curves: Mapping[str, tuple[ArrayLike, ArrayLike, float]],
    *,
    title: str | None = None,
    max_points: int = 2000,
) -> pathlib.Path:
    """Save ROC curves on one axes (subsampled for plotting only).

    Args:
      path: the PNG to write.
      curves: ``{label: (fpr, tpr, auc)}``.
      title: the figure's title.
      max_points: at most this many points per curve are drawn.

    Returns:
      ``path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    for label, (fpr, tpr, auc) in curves.items():
        fpr = np.asarray(fpr)
        tpr = np.asarray(tpr)
        if len(fpr) > max_points:
            idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).astype(int))
            fpr, tpr = fpr[idx], tpr[idx]
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def save_curves(
    path: str | pathlib.Path,
    panels: Mapping[str, Mapping[str, tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]]],
    *,
    hlines: Mapping[str, Sequence[tuple[float, str] | tuple[float, str, str]]] | None = None,
    hspans: Mapping[str, Sequence[tuple[float, float, str]]] | None = None,
    xlabel: str = "training step",
    title: str = "",
) -> pathlib.Path:
    """Curves with bands, one panel per entry of ``panels``.

    Args:
      path: the PNG to write.
      panels: panel title -> {line label -> ``(x, y, lo, hi)``}: a line ``y`` over ``x``
        with a shaded band from ``lo`` to ``hi`` (e.g. the mean over seeds and their range).
      hlines: panel title -> ``[(y, label), ...]`` dashed reference lines; a third entry
        ``(y, label, prefix)`` draws it in the colour of the panel's line whose label starts
        with ``prefix`` (e.g. a paper value beside that method's curve).
      hspans: panel title -> ``[(lo, hi, label), ...]`` shaded reference ranges.
      xlabel: the x axis of every panel.
      title: the figure's title.

    Returns:
      ``path``.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (name, lines) in zip(axes[0], panels.items(), strict=True):
        line_colors = {}
        for i, (label, (x, y, lo, hi)) in enumerate(lines.items()):
            color = line_colors[label] = colors[i % len(colors)]
            ax.plot(np.asarray(x), np.asarray(y), "o-", color=color, label=label)
            ax.fill_between(np.asarray(x), np.asarray(lo), np.asarray(hi), color=color, alpha=0.2)
        for j, (y, label, *prefix) in enumerate((hlines or {}).get(name, ())):
            matching = [c for lbl, c in line_colors.items() if prefix and lbl.startswith(prefix[0])]
            color = matching[0] if matching else colors[(len(lines) + j) % len(colors)]
            ax.axhline(y, color=color, ls="--", lw=1, label=label)
        for lo, hi, label in (hspans or {}).get(name, ()):
            ax.axhspan(lo, hi, color="grey", alpha=0.12, label=label)
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
