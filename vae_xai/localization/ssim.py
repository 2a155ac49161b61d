"""Per-pixel structural similarity (SSIM) of two image batches, and its residual map.

SSIM (Wang et al., "Image quality assessment: from error visibility to structural
similarity", IEEE TIP 2004) compares local means, variances and the covariance of two images
in a Gaussian window. ``1 - SSIM(x, f(x))`` between an image and its reconstruction is the
residual map of Bergmann et al.'s AE-SSIM ("Improving unsupervised defect segmentation by
applying structural similarity to autoencoders", VISAPP 2019), the AE-SSIM baseline of the
MVTec-AD paper (Bergmann et al., CVPR 2019).

The definition matches ``skimage.metrics.structural_similarity(x, y, data_range=1,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=-1,
full=True)``'s full map: an 11 x 11 Gaussian window of sigma 1.5 (scikit-image's
``truncate=3.5`` gives that side), population (not sample) covariances, ``K1 = 0.01``,
``K2 = 0.03``, the image border extended by mirroring with the edge pixel repeated
(``numpy.pad(mode="symmetric")``, which is ``scipy.ndimage``'s ``"reflect"``), and the
per-channel maps averaged over channels. Pure JAX, batched, jit-friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = ["gaussian_window_1d", "ssim_map", "ssim_residual"]


def gaussian_window_1d(size: int, sigma: float) -> np.ndarray:
    """The normalized 1-D Gaussian window ``exp(-t^2 / (2 sigma^2))``, ``t = -r .. r``.

    Args:
      size: the window's side, an odd integer >= 1 (``r = size // 2``).
      sigma: the standard deviation in pixels, > 0.

    Returns:
      ``(size,)`` float64 summing to 1.

    Raises:
      ValueError: an even or non-positive ``size``, or ``sigma <= 0``.
    """
    is_int = isinstance(size, int | np.integer) and not isinstance(size, bool)
    if not is_int or size < 1 or size % 2 == 0:
        raise ValueError(f"window size must be an odd integer >= 1; got {size!r}")
    if not (isinstance(sigma, int | float | np.floating) and np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0; got {sigma!r}")
    t = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(t**2) / (2.0 * float(sigma) ** 2))
    return g / g.sum()


def _filter(x: jax.Array, window: jax.Array) -> jax.Array:
    """Separable Gaussian filter of ``(N, H, W, C)`` with symmetric padding, same size."""
    r = window.shape[0] // 2
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (r, r), (r, r), (0, 0)), mode="symmetric")
    dn = ("NHWC", "HWIO", "NHWC")
    kh = jnp.broadcast_to(window[:, None, None, None], (window.shape[0], 1, 1, c))
    kw = jnp.broadcast_to(window[None, :, None, None], (1, window.shape[0], 1, c))
    precision = jax.lax.Precision.HIGHEST
    x = jax.lax.conv_general_dilated(
        x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c, precision=precision
    )
    return jax.lax.conv_general_dilated(
        x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c, precision=precision
    )


def _check_pair(x: ArrayLike, y: ArrayLike, window: int) -> tuple[jax.Array, jax.Array]:
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            "SSIM needs two image batches of the same shape (N, H, W, C); "
            f"got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if min(x.shape[1:3]) < window // 2 + 1:
        raise ValueError(
            f"images of {x.shape[1]}x{x.shape[2]} pixels are too small for a {window}x{window} "
            "SSIM window (symmetric padding needs a side of at least window // 2 + 1)"
        )
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
    return x.astype(dtype), y.astype(dtype)


def ssim_map(
    x: ArrayLike,
    y: ArrayLike,
    *,
    window: int = 11,
    sigma: float = 1.5,
    data_range: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jax.Array:
    """The per-pixel SSIM of ``x`` and ``y``, averaged over channels.

    ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    the local statistics in a Gaussian window (see the module doc), ``C1 = (k1 data_range)^2``
    and ``C2 = (k2 data_range)^2``.

    Args:
      x, y: ``(N, H, W, C)`` image batches of the same shape.
      window: the Gaussian window's side (odd).
      sigma: its standard deviation in pixels.
      data_range: the value range of the images (1 for images in [0, 1]).
      k1, k2: the stabilizing constants of Wang et al.

    Returns:
      ``(N, H, W)``, 1 where the two images agree in a pixel's neighbourhood; at most 1.

    Raises:
      ValueError: shapes that differ or are not 4-D, images smaller than the window, or a bad
        ``window``/``sigma``/``data_range``.
    """
    g = gaussian_window_1d(window, sigma)
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0; got {data_range!r}")
    x, y = _check_pair(x, y, window)
    w = jnp.asarray(g, x.dtype)
    c = x.shape[-1]
    stats = _filter(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), w)
    mx, my, mxx, myy, mxy = (stats[..., i * c : (i + 1) * c] for i in range(5))
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=-1)


def ssim_residual(x: ArrayLike, y: ArrayLike, **kwargs) -> jax.Array:
    """``1 - ssim_map(x, y)``: 0 where the images agree, larger where the structure differs.

    Args:
      x, y: ``(N, H, W, C)`` image batches of the same shape.
      **kwargs: as :func:`ssim_map`.

    Returns:
      ``(N, H, W)``, in [0, 2].
    """
    return 1.0 - ssim_map(x, y, **kwargs)
