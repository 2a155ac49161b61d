"""The dSprites renderer: sprites from factor values or classes as pure JAX functions.

:func:`render` draws sprites from factor *values* (``jit``/``vmap`` friendly, no host
callbacks), so training code can synthesise any batch on device instead of shipping the 3 GB
official array. The model, in continuous pixel coordinates (pixel ``(r, c)`` covers
``[c, c+1) x [r, r+1)``, its centre is sampled):

* sprite centre ``(16 + 32*posX, 16 + 32*posY)``; posX is the column, posY the row
  (downwards). Every official position keeps the whole sprite inside the frame.
* a pixel is on iff its centre, mapped into sprite coordinates (translate, rotate by
  ``-orientation``, divide by ``scale``; sprite y points up on screen), lies inside the
  shape (:mod:`data_pipelines.dsprites.geometry`). Positive orientation therefore turns the
  sprite counter-clockwise on screen.

:func:`render_from_classes` does the same from class indices (what
:func:`data_pipelines.dsprites.sample_factor_classes` draws); its output is what
``vae_xai.workdir.renderer_identity`` hashes.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from data_pipelines.dsprites.factors import (
    FACTOR_SIZES,
    IMAGE_SIZE,
    LATENT_VALUES,
    _as_int_classes,
    _check_classes,
)
from data_pipelines.dsprites.geometry import (
    _HEART_EDGES,
    ELLIPSE_SEMI_AXES,
    SQUARE_HALF_SIDE,
    _pseudo_angle,
)


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_range(name: str, x: Any, lo: float, hi: float, tol: float = 1e-6) -> None:
    """Validate concrete (non-traced) values: finite and within [lo, hi] (+- tol)."""
    if _is_traced(x):
        return
    a = np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    if a.min() < lo - tol or a.max() > hi + tol:
        raise ValueError(f"{name} must lie in [{lo}, {hi}], got range [{a.min()}, {a.max()}]")


# ----------------------------------------------------------------------------- renderer


def _validate_render_args(shape: Any, scale: Any, orientation: Any, pos_x: Any, pos_y: Any) -> None:
    """Shapes must agree; concrete values must be finite and in the official ranges."""
    args = {
        "shape": shape,
        "scale": scale,
        "orientation": orientation,
        "pos_x": pos_x,
        "pos_y": pos_y,
    }
    shapes = {k: tuple(np.shape(v)) for k, v in args.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"render() inputs must all have the same shape, got {shapes}")
    if not _is_traced(shape):
        s = np.asarray(shape, dtype=np.float64)
        if s.size and (not np.all(np.isfinite(s)) or not np.all(np.isin(s, (1.0, 2.0, 3.0)))):
            raise ValueError(f"shape values must be 1, 2 or 3, got {np.unique(s)}")
    _check_range("scale", scale, 0.5, 1.0)
    _check_range("orientation", orientation, -np.inf, np.inf)
    _check_range("pos_x", pos_x, 0.0, 1.0)
    _check_range("pos_y", pos_y, 0.0, 1.0)


def render(
    shape: ArrayLike,
    scale: ArrayLike,
    orientation: ArrayLike,
    pos_x: ArrayLike,
    pos_y: ArrayLike,
) -> jax.Array:
    """Render dSprites from official factor values; pure JAX (jit / vmap / on device).

    Args:
      shape: 1 = square, 2 = ellipse, 3 = heart (ints or floats holding those numbers).
      scale: in [0.5, 1] (official values linspace(0.5, 1, 6); any value in range works).
      orientation: radians; periodic (reduced mod 2*pi, so 0 and 2*pi render identically).
        Positive angles turn the sprite counter-clockwise on screen.
      pos_x: in [0, 1]; the sprite centre's column is 16 + 32*pos_x pixels.
      pos_y: in [0, 1]; the sprite centre's row (downwards) is 16 + 32*pos_y pixels.

      All five must have the same shape ``B`` (typically ``(N,)``; ``()`` for one sprite,
      e.g. inside ``jax.vmap``).

    Returns:
      float32 array ``B + (64, 64)`` with values in {0., 1.}.

    Raises:
      ValueError: mismatched shapes, or (for concrete, non-traced inputs) NaN / inf or values
        out of range. Under ``jit`` values cannot be checked; out-of-range inputs then just
        render (e.g. a shape code other than 1/2 draws a heart).
    """
    _validate_render_args(shape, scale, orientation, pos_x, pos_y)
    return _render(
        jnp.asarray(shape, jnp.float32),
        jnp.asarray(scale, jnp.float32),
        jnp.asarray(orientation, jnp.float32),
        jnp.asarray(pos_x, jnp.float32),
        jnp.asarray(pos_y, jnp.float32),
    )


def render_shape(
    shape: int,
    scale: ArrayLike,
    orientation: ArrayLike,
    pos_x: ArrayLike,
    pos_y: ArrayLike,
) -> jax.Array:
    """Like :func:`render`, for one shape type given as a Python int.

    Evaluates only that shape's inside-test (cheaper than :func:`render`, which evaluates all
    three and selects), e.g. for brute-force searches over many candidates.

    Args:
      shape: 1 (square), 2 (ellipse) or 3 (heart).
      scale: as for :func:`render`.
      orientation: as for :func:`render`.
      pos_x: as for :func:`render`.
      pos_y: as for :func:`render`.

    Returns:
      float32 ``B + (64, 64)`` in {0., 1.}, as :func:`render`.

    Raises:
      ValueError: ``shape`` not 1, 2 or 3, or as :func:`render`.
    """
    if shape not in (1, 2, 3):
        raise ValueError(f"shape must be 1 (square), 2 (ellipse) or 3 (heart), got {shape!r}")
    _validate_render_args(np.full(np.shape(scale), shape), scale, orientation, pos_x, pos_y)
    return _render_one_shape(
        int(shape),
        jnp.asarray(scale, jnp.float32),
        jnp.asarray(orientation, jnp.float32),
        jnp.asarray(pos_x, jnp.float32),
        jnp.asarray(pos_y, jnp.float32),
    )


@functools.partial(jax.jit, static_argnums=0)
def _render_one_shape(
    shape: int, scale: jax.Array, orientation: jax.Array, pos_x: jax.Array, pos_y: jax.Array
) -> jax.Array:
    u, v, sc = _sprite_coords(scale, orientation, pos_x, pos_y)
    inside = (_inside_square, _inside_ellipse, _inside_heart)[shape - 1](u, v, sc)
    return inside.astype(jnp.float32)


@jax.jit
def _render(
    shape: jax.Array, scale: jax.Array, orientation: jax.Array, pos_x: jax.Array, pos_y: jax.Array
) -> jax.Array:
    inside = _inside_masks(scale, orientation, pos_x, pos_y)
    code = jnp.round(shape)[..., None, None]
    mask = jnp.where(code == 1, inside[0], jnp.where(code == 2, inside[1], inside[2]))
    return mask.astype(jnp.float32)


def _sprite_coords(
    scale: jax.Array, orientation: jax.Array, pos_x: jax.Array, pos_y: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Pixel centres in (unscaled) sprite coordinates: u right, v up; plus broadcast scale."""
    centres = jnp.arange(IMAGE_SIZE, dtype=jnp.float32) + 0.5
    ex = lambda a: jnp.asarray(a, jnp.float32)[..., None, None]
    dx = centres[None, :] - (16.0 + 32.0 * ex(pos_x))  # (..., 1, 64): columns
    dy = (16.0 + 32.0 * ex(pos_y)) - centres[:, None]  # (..., 64, 1): rows, pointing up
    theta = jnp.mod(ex(orientation), jnp.float32(2.0 * np.pi))
    c, s = jnp.cos(theta), jnp.sin(theta)
    # Inverse rotation (by -theta) takes screen offsets back into the sprite frame.
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return u, v, ex(scale)


def _inside_masks(
    scale: jax.Array, orientation: jax.Array, pos_x: jax.Array, pos_y: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Boolean (..., 64, 64) inside-tests for square, ellipse and heart."""
    u, v, sc = _sprite_coords(scale, orientation, pos_x, pos_y)
    return (
        _inside_square(u, v, sc),
        _inside_ellipse(u, v, sc),
        _inside_heart(u, v, sc),
    )


def _inside_square(u: jax.Array, v: jax.Array, sc: jax.Array) -> jax.Array:
    h = SQUARE_HALF_SIDE * sc
    return (jnp.abs(u) <= h) & (jnp.abs(v) <= h)


def _inside_ellipse(u: jax.Array, v: jax.Array, sc: jax.Array) -> jax.Array:
    a, b = ELLIPSE_SEMI_AXES
    return (u / (a * sc)) ** 2 + (v / (b * sc)) ** 2 <= 1.0


def _inside_heart(u: jax.Array, v: jax.Array, sc: jax.Array) -> jax.Array:
    k = _HEART_EDGES.shape[0]
    a = _pseudo_angle(u, v, jnp)
    idx = jnp.floor((a + 2.0) * (k / 4.0)).astype(jnp.int32) % k
    nx, ny, d = (jnp.take(jnp.asarray(_HEART_EDGES[:, i]), idx) for i in range(3))
    return nx * u + ny * v <= d * sc


_VALUE_TABLE = np.zeros((5, max(FACTOR_SIZES)), np.float32)
for _i, _vals in enumerate(LATENT_VALUES[1:]):
    _VALUE_TABLE[_i, : len(_vals)] = _vals


def render_from_classes(classes: ArrayLike) -> jax.Array:
    """Render from class indices.

    Pure JAX (works under jit, e.g. on :func:`sample_factor_classes` output). Concrete inputs
    are range-checked; traced ones are clipped to valid classes.

    Args:
      classes: integer ``(..., 5)`` factor classes or ``(..., 6)`` latent classes.

    Returns:
      float32 ``(..., 64, 64)`` in {0., 1.}.

    Raises:
      ValueError: a last axis other than 5 or 6, or (concrete inputs) classes out of range.
    """
    if not _is_traced(classes):
        c = _as_int_classes(classes, "classes")
        _check_classes(c)
        classes = c
    if np.ndim(classes) < 1 or np.shape(classes)[-1] not in (5, 6):
        raise ValueError(f"classes must have a last axis of 5 or 6, got {np.shape(classes)}")
    return _render_from_classes(jnp.asarray(classes, jnp.int32))


@jax.jit
def _render_from_classes(classes: jax.Array) -> jax.Array:
    c = classes[..., -5:]
    c = jnp.clip(c, 0, jnp.asarray(FACTOR_SIZES, jnp.int32) - 1)
    table = jnp.asarray(_VALUE_TABLE)
    vals = [table[i][c[..., i]] for i in range(5)]
    return _render(*vals)
