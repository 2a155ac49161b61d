"""Training-time image augmentations as pure, jit-able JAX functions over a batch.

The VAE of Liu et al. (CVPR 2020) is trained on the few normal images of an MVTec-AD
category with random mirroring and random rotation. These functions implement that on
device, inside a jitted train step if wanted::

    key, sub = jax.random.split(key)
    images = augment_batch(sub, images)                 # (B, H, W, C) float in [0, 1]
    images, masks = augment_batch(sub, images, masks)   # same transform for a mask

Conventions (all functions):

* ``images`` is ``(B, H, W, C)`` (channels last), any float dtype; ``masks`` is
  ``(B, H, W)`` and is transformed with exactly the same geometry as its image, but
  resampled with nearest neighbour so a binary mask stays binary.
* Rows run downward and columns to the right (image display convention).
* **Rotation direction: a positive angle turns the content counter-clockwise on screen**,
  about the image centre ``((H-1)/2, (W-1)/2)``. On a square image a rotation by +90
  degrees equals ``np.rot90(image, k=1, axes=(0, 1))``.
* Rotation resamples the pixel grid bilinearly (``jax.scipy.ndimage.map_coordinates``,
  ``order=1``). Pixels that come from outside the image are filled according to
  ``fill_mode`` (``"reflect"`` by default, so textures do not get black corners;
  ``"constant"`` uses ``fill_value``). Sampling coordinates within ``1e-4`` px of an
  integer are snapped to it, so 0 and multiples of 90 degrees are exact pixel permutations.

Default policy of :func:`augment_batch` (a choice documented here, not a number taken from
the paper): horizontal mirror with probability 0.5, no vertical mirror, and a rotation by
an angle drawn uniformly from ``[-max_rotation_deg, +max_rotation_deg]`` with
``max_rotation_deg=15``. ``right_angles=True`` adds a uniformly drawn multiple of 90 degrees
(0, 90, 180, 270), which suits rotation-invariant textures and top-down objects like the
bottle; do not use it (nor large angles or vertical mirroring) for categories where
orientation matters (e.g. transistor "misplaced", metal_nut "flip").
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

FillMode = Literal["constant", "nearest", "reflect", "mirror", "wrap"]

_SNAP_TOL = 1e-4


def _check_batch(images: jax.Array, masks: jax.Array | None) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, H, W, C); got shape {images.shape}")
    if masks is not None and masks.shape != images.shape[:3]:
        raise ValueError(
            f"masks must be (B, H, W) matching images {images.shape}; got {masks.shape}"
        )


def flip_horizontal(images: jax.Array) -> jax.Array:
    """Mirror left-right.

    Args:
      images: ``(B, H, W, C)`` or ``(B, H, W)``.

    Returns:
      The mirrored batch, same shape.
    """
    return jnp.flip(images, axis=2)


def flip_vertical(images: jax.Array) -> jax.Array:
    """Mirror top-bottom.

    Args:
      images: ``(B, H, W, C)`` or ``(B, H, W)``.

    Returns:
      The mirrored batch, same shape.
    """
    return jnp.flip(images, axis=1)


def random_flip(
    key: jax.Array,
    images: jax.Array,
    masks: jax.Array | None = None,
    *,
    horizontal: bool = True,
    vertical: bool = False,
    prob: float = 0.5,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Mirror each example independently with probability ``prob`` per enabled axis.

    Args:
      key: PRNG key.
      images: ``(B, H, W, C)``.
      masks: optional ``(B, H, W)``, flipped exactly like its image.
      horizontal: allow left-right mirroring.
      vertical: allow top-bottom mirroring.
      prob: probability of each enabled flip.

    Returns:
      ``images`` (and ``masks`` if given) with the same shapes and dtypes.
    """
    _check_batch(images, masks)
    b = images.shape[0]
    kh, kv = jax.random.split(key)
    if horizontal:
        do = jax.random.bernoulli(kh, prob, (b,))
        images = jnp.where(do[:, None, None, None], flip_horizontal(images), images)
        if masks is not None:
            masks = jnp.where(do[:, None, None], flip_horizontal(masks), masks)
    if vertical:
        do = jax.random.bernoulli(kv, prob, (b,))
        images = jnp.where(do[:, None, None, None], flip_vertical(images), images)
        if masks is not None:
            masks = jnp.where(do[:, None, None], flip_vertical(masks), masks)
    return images if masks is None else (images, masks)


def _source_coords(angle_deg: jax.Array, height: int, width: int) -> jax.Array:
    """Input (row, col) sampled by each output pixel for a CCW rotation; ``(2, H, W)``."""
    theta = jnp.deg2rad(angle_deg.astype(jnp.float32))
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    # Cartesian frame with y pointing up: x = c - cx, y = cy - r. The output at (x, y) takes
    # the input at R(-theta) (x, y), which turns the content by +theta (counter-clockwise).
    x, y = cols - cx, cy - rows
    x_in = cos * x + sin * y
    y_in = -sin * x + cos * y
    coords = jnp.stack([cy - y_in, cx + x_in])
    snapped = jnp.round(coords)
    return jnp.where(jnp.abs(coords - snapped) < _SNAP_TOL, snapped, coords)


def rotate(
    images: jax.Array,
    angles_deg: jax.Array | float,
    masks: jax.Array | None = None,
    *,
    fill_mode: FillMode = "reflect",
    fill_value: float = 0.0,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Rotate each example counter-clockwise (on screen) by its angle about the centre.

    Args:
      images: ``(B, H, W, C)``; resampled bilinearly (``order=1``).
      angles_deg: scalar or ``(B,)`` angles in degrees; positive = counter-clockwise.
      masks: optional ``(B, H, W)``; resampled with nearest neighbour (``order=0``) on the
        same grid, so a {0, 1} mask stays {0, 1}.
      fill_mode: how samples outside the image are filled (``map_coordinates`` modes).
      fill_value: value for ``fill_mode="constant"``.

    Returns:
      Rotated ``images`` (same shape and dtype), and ``masks`` if given.
    """
    _check_batch(images, masks)
    b, h, w, _ = images.shape
    angles = jnp.broadcast_to(jnp.asarray(angles_deg, dtype=jnp.float32), (b,))
    coords = jax.vmap(lambda a: _source_coords(a, h, w))(angles)  # (B, 2, H, W)

    def sample(plane: jax.Array, crd: jax.Array, order: int) -> jax.Array:
        return jax.scipy.ndimage.map_coordinates(
            plane, list(crd), order=order, mode=fill_mode, cval=fill_value
        )

    # vmap over channels (last axis of the image) and then over the batch.
    per_image = jax.vmap(lambda img, crd: sample(img, crd, 1), in_axes=(2, None), out_axes=2)
    out = jax.vmap(per_image)(images.astype(jnp.float32), coords).astype(images.dtype)
    if masks is None:
        return out
    out_masks = jax.vmap(lambda m, crd: sample(m, crd, 0))(masks.astype(jnp.float32), coords)
    return out, out_masks.astype(masks.dtype)


def random_rotate(
    key: jax.Array,
    images: jax.Array,
    masks: jax.Array | None = None,
    *,
    max_rotation_deg: float = 15.0,
    right_angles: bool = False,
    fill_mode: FillMode = "reflect",
    fill_value: float = 0.0,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Rotate each example by a random angle (see :func:`rotate` for the direction).

    The angle is ``U(-max_rotation_deg, +max_rotation_deg)`` plus, if ``right_angles``,
    ``90 * k`` with ``k`` uniform in {0, 1, 2, 3} (only for square images).

    Args:
      key: PRNG key.
      images: ``(B, H, W, C)``.
      masks: optional ``(B, H, W)``, rotated with the same angle (nearest neighbour).
      max_rotation_deg: half-width of the uniform angle range in degrees (0 disables).
      right_angles: add a random multiple of 90 degrees.
      fill_mode: see :func:`rotate`.
      fill_value: see :func:`rotate`.

    Returns:
      ``images`` (and ``masks`` if given) with the same shapes and dtypes.
    """
    _check_batch(images, masks)
    b, h, w, _ = images.shape
    if right_angles and h != w:
        raise ValueError(f"right_angles=True needs square images; got H={h}, W={w}")
    k_small, k_right = jax.random.split(key)
    angles = jax.random.uniform(k_small, (b,), minval=-max_rotation_deg, maxval=max_rotation_deg)
    if right_angles:
        angles = angles + 90.0 * jax.random.randint(k_right, (b,), 0, 4).astype(jnp.float32)
    return rotate(images, angles, masks, fill_mode=fill_mode, fill_value=fill_value)


def augment_batch(
    key: jax.Array,
    images: jax.Array,
    masks: jax.Array | None = None,
    *,
    hflip: bool = True,
    vflip: bool = False,
    max_rotation_deg: float = 15.0,
    right_angles: bool = False,
    fill_mode: FillMode = "reflect",
    fill_value: float = 0.0,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Random mirroring then random rotation, per example (the paper's training augmentation).

    Jit with the keyword options static, e.g.
    ``jax.jit(augment_batch, static_argnames=("hflip", "vflip", "max_rotation_deg",
    "right_angles", "fill_mode"))``, or call it inside an already-jitted train step.

    Args:
      key: PRNG key.
      images: ``(B, H, W, C)`` float.
      masks: optional ``(B, H, W)`` transformed identically (nearest neighbour).
      hflip: random left-right mirror (p=0.5).
      vflip: random top-bottom mirror (p=0.5).
      max_rotation_deg: rotation angle ~ ``U(-max, +max)`` degrees; 0 with
        ``right_angles=False`` skips the resampling entirely.
      right_angles: add a random multiple of 90 degrees (square images only).
      fill_mode: see :func:`rotate`.
      fill_value: see :func:`rotate`.

    Returns:
      Augmented ``images`` ``(B, H, W, C)`` (and ``masks`` ``(B, H, W)`` if given).
    """
    _check_batch(images, masks)
    k_flip, k_rot = jax.random.split(key)
    out = random_flip(k_flip, images, masks, horizontal=hflip, vertical=vflip)
    if max_rotation_deg == 0 and not right_angles:
        return out
    images, masks = (out, None) if masks is None else out
    return random_rotate(
        k_rot,
        images,
        masks,
        max_rotation_deg=max_rotation_deg,
        right_angles=right_angles,
        fill_mode=fill_mode,
        fill_value=fill_value,
    )
