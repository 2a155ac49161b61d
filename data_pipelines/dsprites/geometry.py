"""dSprites sprite geometry: shape sizes at scale 1, the heart polygon, areas and centroids.

All lengths are in pixels at scale 1, in the sprite frame (x right, y up):

* square: ``|u|, |v| <= 9.6`` (side 19.2 at scale 1; axis-aligned at the official
  positions this covers 19-20 pixel rows/columns, exactly 20 at posX = posY = 0);
* ellipse: ``(u/12.76)^2 + (v/7.22)^2 <= 1`` (long axis horizontal at orientation 0);
* heart: upright, lobes on top, the classic parametric heart
  ``x = 9.6 sin^3 t``, ``y = (10.59/16)(13 cos t - 5 cos 2t - 2 cos 3t - cos 4t) + 1.44``,
  evaluated as a star-shaped polygon with 512 vertices around the sprite centre (the
  point-in-polygon test is then one division, one gather and one dot product per pixel).

The numbers are fitted to the 320 real frames that ship as an animation with the official
release (``experiments/dsprites_fidelity.py`` re-measures the fit; the result is in
RESULTS.md, "dSprites renderer fidelity"). The nominal "20 px" square side and "26 x 14"
ellipse of the release notes are the pixel bounding boxes at posX = posY = 0; rotated frames
pin the continuous sizes down to 19.2 and 25.5 x 14.4. What remains is boundary pixels of the
rasteriser the release used, which point sampling does not reproduce exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# All lengths in pixels at scale 1 (the module docstring says how they were obtained).
SQUARE_HALF_SIDE = 9.6
ELLIPSE_SEMI_AXES = (12.76, 7.22)  # (horizontal, vertical) at orientation 0
HEART_X_AMPLITUDE = 9.6
HEART_Y_AMPLITUDE = 10.59
HEART_Y_OFFSET = 1.44
HEART_VERTICES = 512


def _heart_curve(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classic parametric heart, scaled to dSprites (x right, y up, scale 1)."""
    x = HEART_X_AMPLITUDE * np.sin(t) ** 3
    y = (
        HEART_Y_AMPLITUDE
        / 16.0
        * (13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t))
        + HEART_Y_OFFSET
    )
    return x, y


def _pseudo_angle(u: Any, v: Any, xp: Any = np) -> Any:
    """Cheap monotonic stand-in for ``atan2(u, v)`` (clockwise from up), in [-2, 2].

    ``t = u / (|u| + |v|)`` on the upper half-plane, reflected to ``+-2 - t`` below; this
    "diamond angle" costs a division instead of an ``atan2`` (which dominates the heart test
    on CPU) and orders directions exactly as the true angle does.
    """
    t = u / xp.maximum(xp.abs(u) + xp.abs(v), 1e-30)
    return xp.where(v >= 0, t, xp.where(t >= 0, 2.0, -2.0) - t)


def _pseudo_angle_direction(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`_pseudo_angle`: a direction (u, v) (not normalised) for each ``a``."""
    a = np.where(a > 2.0, a - 4.0, a)
    upper = np.abs(a) <= 1.0
    t = np.where(upper, a, np.sign(a) * 2.0 - a)
    return t, np.where(upper, 1.0, -1.0) * (1.0 - np.abs(t))


def _heart_vertices(num_vertices: int = HEART_VERTICES) -> tuple[np.ndarray, np.ndarray]:
    """Points of the heart curve at pseudo-angles ``a_i = -2 + 4 i / K`` (clockwise order).

    The polar angle ``atan2(x, y)`` increases monotonically along the curve (checked), i.e.
    the heart is star-shaped around the sprite centre, so each direction meets it once.
    """
    t = np.linspace(-np.pi, np.pi, 400_001)
    x, y = _heart_curve(t)
    phi = np.unwrap(np.arctan2(x, y))  # runs from -pi (tip) through 0 (notch) to +pi
    if not np.all(np.diff(phi) > 0):
        raise AssertionError("heart curve is not star-shaped around the sprite centre")
    du, dv = _pseudo_angle_direction(-2.0 + 4.0 * np.arange(num_vertices) / num_vertices)
    angles = np.arctan2(du, dv)
    angles = np.where(angles >= np.pi, angles - 2.0 * np.pi, angles)
    r = np.interp(angles, phi, np.hypot(x, y))
    return r * np.sin(angles), r * np.cos(angles)


def _heart_polygon(num_vertices: int = HEART_VERTICES) -> np.ndarray:
    """Edge half-planes of the heart as a star polygon around the sprite centre.

    A point whose pseudo-angle falls in bin ``i`` (between vertices ``i`` and ``i + 1``) is
    inside iff it lies on the centre's side of edge ``i``: an O(1) inside test per pixel (one
    division, one gather, one dot product) instead of a loop over all edges.

    Returns:
      float32 array (K, 3) of ``(n_x, n_y, d)``: inside iff ``n . p <= d`` (unit n, d > 0).
    """
    vx, vy = _heart_vertices(num_vertices)
    ex, ey = np.roll(vx, -1) - vx, np.roll(vy, -1) - vy
    # Vertices run clockwise, so the outward normal of edge (v_i -> v_i+1) is (-ey, ex).
    norm = np.hypot(ex, ey)
    nx, ny = -ey / norm, ex / norm
    d = nx * vx + ny * vy
    if not np.all(d > 0):
        raise AssertionError("heart polygon does not contain the sprite centre")
    return np.stack([nx, ny, d], axis=1).astype(np.float32)


_HEART_EDGES = _heart_polygon()


def _heart_polygon_area(num_vertices: int = HEART_VERTICES) -> float:
    """Shoelace area of the heart polygon."""
    vx, vy = _heart_vertices(num_vertices)
    return float(0.5 * abs(np.sum(vx * np.roll(vy, -1) - np.roll(vx, -1) * vy)))


_SHAPE_AREAS = (
    (2.0 * SQUARE_HALF_SIDE) ** 2,
    math.pi * ELLIPSE_SEMI_AXES[0] * ELLIPSE_SEMI_AXES[1],
    _heart_polygon_area(),
)


def shape_area(shape: int, scale: float = 1.0) -> float:
    """Continuous area in px^2 of a shape at ``scale`` (rendered areas differ by sampling).

    Useful to narrow a search by observed pixel count: square 368.6, ellipse 289.4, heart
    224.6 at scale 1, all proportional to ``scale**2``.

    Args:
      shape: 1 (square), 2 (ellipse) or 3 (heart).
      scale: the sprite scale.

    Returns:
      The area in square pixels.

    Raises:
      ValueError: ``shape`` not 1, 2 or 3.
    """
    if shape not in (1, 2, 3):
        raise ValueError(f"shape must be 1 (square), 2 (ellipse) or 3 (heart), got {shape!r}")
    return _SHAPE_AREAS[shape - 1] * float(scale) ** 2


def _heart_centroid_y() -> float:
    """y of the heart polygon's centroid (sprite frame, y up, scale 1)."""
    x, y = _heart_vertices()
    x1, y1 = np.roll(x, -1), np.roll(y, -1)
    cross = x * y1 - x1 * y
    return float(np.sum((y + y1) * cross) / (3.0 * np.sum(cross)))


_HEART_CENTROID_Y = _heart_centroid_y()


def shape_centroid_offset(
    shape: int, scale: float = 1.0, orientation: float = 0.0
) -> tuple[float, float]:
    """Screen offset of the shape's continuous centroid from its centre, in pixels.

    Zero for the square and ellipse; the heart's centroid sits about 1.9*scale px above its
    centre at orientation 0 and turns with it. Subtracting it from an image's pixel centroid
    estimates the sprite centre (and so posX/posY) to a fraction of a pixel.

    Args:
      shape: 1 (square), 2 (ellipse) or 3 (heart).
      scale: the sprite scale.
      orientation: radians, counter-clockwise on screen.

    Returns:
      ``(d_col, d_row)`` in pixels (rows pointing down).

    Raises:
      ValueError: ``shape`` not 1, 2 or 3.
    """
    if shape not in (1, 2, 3):
        raise ValueError(f"shape must be 1 (square), 2 (ellipse) or 3 (heart), got {shape!r}")
    if shape != 3:
        return 0.0, 0.0
    r = _HEART_CENTROID_Y * float(scale)
    # Sprite point (0, r) turned counter-clockwise by theta; screen rows point down.
    return -r * math.sin(orientation), -r * math.cos(orientation)
