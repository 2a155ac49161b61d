"""Synthetic anomalies with exact pixel masks, pasted into normal images.

A positive control for anomaly localization: on MVTec-AD the ground truth is a hand-drawn
mask around a real defect, and a map that fails to localize may fail because the model never
saw the defect. Here the anomaly is a square we put there ourselves, so the mask is exact and
the only question left is whether a map finds it. :func:`paste_squares` offers two kinds:
``"square"`` adds ink (a filled square of ``value``, default 1.0) and ``"erase"`` removes ink
(a filled square of 0). Both are pure NumPy and deterministic in ``seed``.

The mask is what the anomaly changed: the pixels of the square that moved by more than
``min_change`` (default 0.25), not the whole square, so a square pasted over existing ink, or
an erased square over background, does not count undetectable pixels as anomalous. Squares go
to a uniformly random position (``placement="uniform"``, the default for ``"square"``) or are
centred on a random ink pixel of the image (``placement="ink"``, the default for ``"erase"``,
so that erasing removes part of the object rather than empty background).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = ["KINDS", "paste_squares"]

KINDS = ("square", "erase")
Kind = Literal["square", "erase"]
Placement = Literal["uniform", "ink"]
_DEFAULT_PLACEMENT = {"square": "uniform", "erase": "ink"}
_DEFAULT_VALUE = {"square": 1.0, "erase": 0.0}


def paste_squares(
    images: np.ndarray,
    *,
    fraction: float = 0.5,
    size: int = 7,
    value: float | None = None,
    margin: int = 2,
    kind: Kind = "square",
    placement: Placement | None = None,
    min_change: float = 0.25,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Paste a filled ``size x size`` square into a random subset of ``images``.

    ``fraction * N`` images (rounded to the nearest integer, halves up), chosen without
    replacement by ``np.random.default_rng(seed)``, get a square whose top-left corner
    ``(y, x)`` satisfies ``margin <= y <= H - margin - size`` (likewise ``x``), so the square
    stays ``margin`` pixels inside every border; every channel of it is set to the fill value.
    With ``placement="uniform"`` the corner is uniform in that range; with ``"ink"`` the
    square is centred on a uniformly chosen pixel whose channel mean exceeds 0.5 (clipped to
    the range; uniform if the image has no such pixel). The other images are unchanged.

    Args:
      images: normal images ``(N, H, W, C)``, floating point, in [0, 1].
      fraction: share of the images that become anomalous, in [0, 1].
      size: side of the square in pixels (>= 1).
      value: fill value in [0, 1]; default 1.0 for ``kind="square"`` (added ink) and 0.0 for
        ``kind="erase"`` (removed ink).
      margin: minimum distance in pixels between the square and the image border (>= 0).
      kind: ``"square"`` or ``"erase"``; also the defect name of the anomalous images.
      placement: ``"uniform"`` or ``"ink"``; default ``"uniform"`` for ``"square"`` and
        ``"ink"`` for ``"erase"``.
      min_change: a pixel of the square is in the mask when some channel moved by more than
        this, in (0, 1].
      seed: seeds the choice of images and positions.

    Returns:
      ``{"image": (N, H, W, C) float32, "mask": (N, H, W) uint8 (1 where the square
      changed the image), "label": (N,) int32 (1 = anomalous), "defect": (N,) str
      (``kind`` or "good")}``.

    Raises:
      ValueError: on a wrong shape or dtype, NaN or out-of-range values, an unknown ``kind``,
        a square (plus margins) that does not fit, or ``fraction`` outside [0, 1].
    """
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C) (ndim 4); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(
            f"images must have a floating dtype with values in [0, 1]; got {arr.dtype}"
        )
    if np.isnan(arr).any():
        raise ValueError("images contain NaN")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"images must have values in [0, 1]; got range [{arr.min()}, {arr.max()}]")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1]; got {fraction}")
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer; got {size}")
    if int(margin) != margin or margin < 0:
        raise ValueError(f"margin must be a non-negative integer; got {margin}")
    n, h, w, _ = arr.shape
    size, margin = int(size), int(margin)
    if size + 2 * margin > min(h, w):
        raise ValueError(
            f"size + 2 * margin = {size} + 2 * {margin} = {size + 2 * margin} is larger than "
            f"the image ({h} x {w})"
        )
    fill = _DEFAULT_VALUE[kind] if value is None else float(value)
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"value must be in [0, 1]; got {value}")

    placement = _DEFAULT_PLACEMENT[kind] if placement is None else placement
    if placement not in ("uniform", "ink"):
        raise ValueError(f'placement must be "uniform" or "ink"; got {placement!r}')
    if not 0.0 < min_change <= 1.0:
        raise ValueError(f"min_change must be in (0, 1]; got {min_change}")

    rng = np.random.default_rng(seed)
    n_anomalous = int(np.floor(fraction * n + 0.5))
    chosen = np.sort(rng.choice(n, size=n_anomalous, replace=False))
    tops = rng.integers(margin, h - margin - size + 1, size=n_anomalous)
    lefts = rng.integers(margin, w - margin - size + 1, size=n_anomalous)

    out = arr.astype(np.float32, copy=True)
    mask = np.zeros((n, h, w), np.uint8)
    label = np.zeros(n, np.int32)
    for i, y, x in zip(chosen, tops, lefts, strict=True):
        if placement == "ink":
            ink = np.argwhere(arr[i].mean(axis=-1) > 0.5)
            if len(ink):
                cy, cx = ink[rng.integers(len(ink))]
                y = int(np.clip(cy - size // 2, margin, h - margin - size))
                x = int(np.clip(cx - size // 2, margin, w - margin - size))
        out[i, y : y + size, x : x + size, :] = fill
        moved = np.abs(out[i] - arr[i]).max(axis=-1) > min_change
        mask[i] = moved
        label[i] = 1
    defect = np.where(label == 1, kind, "good").astype(str)
    return {"image": out, "mask": mask, "label": label, "defect": defect}
