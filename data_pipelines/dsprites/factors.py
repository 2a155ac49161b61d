"""dSprites bookkeeping: the official latents, their values, and row <-> class conversions.

dSprites (Matthey et al., 2017) holds every combination of 6 latents exactly once (see the
table in :mod:`data_pipelines.dsprites`). Image ``i`` of the official array has latent classes
``c`` with ``i = c . (245760, 245760, 40960, 1024, 32, 1)`` (posY varies fastest), which is
what :func:`flat_index` / :func:`classes_from_flat_index` implement. Everything here is
host-side NumPy except :func:`sample_factor_classes` given a JAX key.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

LATENT_NAMES: tuple[str, ...] = ("color", "shape", "scale", "orientation", "posX", "posY")
LATENT_SIZES: tuple[int, ...] = (1, 3, 6, 40, 32, 32)
# Row-major strides of the official array: flat = classes . LATENT_BASES.
LATENT_BASES: tuple[int, ...] = (245760, 245760, 40960, 1024, 32, 1)
NUM_IMAGES: int = 737280
IMAGE_SIZE: int = 64

# The five factors that actually vary (color is constant).
FACTOR_NAMES: tuple[str, ...] = LATENT_NAMES[1:]
FACTOR_SIZES: tuple[int, ...] = LATENT_SIZES[1:]

# Official latent values per class, float64 as in the release's ``latents_values``.
LATENT_VALUES: tuple[np.ndarray, ...] = (
    np.array([1.0]),
    np.array([1.0, 2.0, 3.0]),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2.0 * np.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
for _v in LATENT_VALUES:
    _v.setflags(write=False)


def factor_classes_to_latent_classes(classes: ArrayLike) -> np.ndarray:
    """Convert factor classes (shape, scale, orientation, posX, posY) to the 6 official latents.

    Prepends the constant color class 0; 6-column input is validated and returned as is.

    Args:
      classes: integer ``(..., 5)`` factor classes or ``(..., 6)`` latent classes.

    Returns:
      int64 ``(..., 6)`` latent classes.

    Raises:
      ValueError: a last axis other than 5 or 6, non-integer values or classes out of range.
    """
    c = _as_int_classes(classes, "classes")
    if c.shape[-1] == 5:
        c = np.concatenate([np.zeros(c.shape[:-1] + (1,), np.int64), c], axis=-1)
    _check_classes(c)
    return c


def _as_int_classes(classes: ArrayLike, name: str) -> np.ndarray:
    c = np.asarray(classes)
    if c.ndim < 1 or c.shape[-1] not in (5, 6):
        raise ValueError(
            f"{name} must have a last axis of 5 (shape, scale, orientation, posX, posY) or 6 "
            f"(color first), got shape {c.shape}"
        )
    if c.dtype.kind == "f":
        if not np.all(np.isfinite(c)) or not np.all(c == np.round(c)):
            raise ValueError(f"{name} must hold integer class indices")
    elif c.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {c.dtype}")
    return c.astype(np.int64)


def _check_classes(c: np.ndarray) -> None:
    sizes = np.asarray(LATENT_SIZES[-c.shape[-1] :])
    if c.size and (np.any(c < 0) or np.any(c >= sizes)):
        bad = np.argwhere((c < 0) | (c >= sizes))[0]
        raise ValueError(
            f"class index out of range at {tuple(bad)}: {c[tuple(bad)]} not in "
            f"[0, {sizes[bad[-1]]}) for {LATENT_NAMES[6 - c.shape[-1] + bad[-1]]}"
        )


def latent_values_from_classes(classes: ArrayLike) -> np.ndarray:
    """Official latent values for class indices (host-side, float64 like the release).

    Args:
      classes: int array (..., 6) of latent classes (color first) or (..., 5) of factor
        classes (shape, scale, orientation, posX, posY).

    Returns:
      float64 array of the same shape: e.g. a (6,) row ``[0, 2, 5, 0, 31, 0]`` maps to
      ``[1, 3, 1, 0, 1, 0]``.
    """
    c = _as_int_classes(classes, "classes")
    _check_classes(c)
    tables = LATENT_VALUES[-c.shape[-1] :]
    return np.stack([tables[i][c[..., i]] for i in range(c.shape[-1])], axis=-1)


def flat_index(latents_classes: ArrayLike) -> np.ndarray:
    """Row of the official array holding each combination: ``classes . LATENT_BASES``.

    Args:
      latents_classes: int (..., 6) latent classes, or (..., 5) factor classes (color = 0).

    Returns:
      int64 array (...,) in [0, 737280).
    """
    c = factor_classes_to_latent_classes(latents_classes)
    return c @ np.asarray(LATENT_BASES, np.int64)


def classes_from_flat_index(idx: ArrayLike) -> np.ndarray:
    """Inverse of :func:`flat_index`: official row numbers to latent classes.

    Args:
      idx: integer ``(...,)`` rows in ``[0, 737280)`` (integral floats are accepted).

    Returns:
      int64 ``(..., 6)`` latent classes (color first, always 0).

    Raises:
      ValueError: non-integer or out-of-range rows.
    """
    i = np.asarray(idx)
    if i.dtype.kind not in "iu":
        if i.dtype.kind != "f" or not np.all(np.isfinite(i)) or not np.all(i == np.round(i)):
            raise ValueError(f"idx must hold integer row numbers, got dtype {i.dtype}")
    i = i.astype(np.int64)
    if i.size and (i.min() < 0 or i.max() >= NUM_IMAGES):
        raise ValueError(f"idx must lie in [0, {NUM_IMAGES}), got [{i.min()}, {i.max()}]")
    out = np.empty(i.shape + (6,), np.int64)
    rest = i
    for k in range(5, 0, -1):
        out[..., k] = rest % LATENT_SIZES[k]
        rest = rest // LATENT_SIZES[k]
    out[..., 0] = 0
    return out


def sample_factor_classes(key_or_rng: Any, n: int) -> jax.Array | np.ndarray:
    """Draw ``n`` factor-class rows uniformly (each of the 5 factors independently).

    Uniform independent factors are exactly a uniform draw over the 737,280 images.

    Args:
      key_or_rng: a JAX PRNG key (typed or raw uint32 (2,)) -> returns an int32
        ``jax.Array`` (n, 5) (works under jit); or a ``np.random.Generator`` or int seed ->
        returns an int64 ``np.ndarray`` (n, 5).
      n: number of rows (>= 0).

    Returns:
      (n, 5) classes (shape, scale, orientation, posX, posY); feed to
      :func:`render_from_classes`.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    n = int(n)
    sizes = np.asarray(FACTOR_SIZES)
    if isinstance(key_or_rng, np.random.Generator | int | np.integer) and not isinstance(
        key_or_rng, bool
    ):
        rng = (
            np.random.default_rng(key_or_rng)
            if not isinstance(key_or_rng, np.random.Generator)
            else key_or_rng
        )
        return rng.integers(0, sizes, size=(n, 5), dtype=np.int64)
    key = key_or_rng
    is_key = isinstance(key, jax.Array) and (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.shape == (2,) and key.dtype == jnp.uint32)
    )
    if not is_key:
        raise TypeError(
            "key_or_rng must be a jax PRNG key, a numpy Generator or an int seed, got "
            f"{type(key_or_rng).__name__}"
        )
    return jax.random.randint(key, (n, 5), 0, jnp.asarray(sizes, jnp.int32), dtype=jnp.int32)
