"""dSprites: an on-device renderer plus the official release's bookkeeping and loaders.

dSprites (Matthey et al., 2017) holds every combination of 6 latents exactly once:

======================  =====  =========================================================
latent                  size   values
======================  =====  =========================================================
color                   1      1 (white)
shape                   3      1 = square, 2 = ellipse, 3 = heart
scale                   6      linspace(0.5, 1, 6)
orientation             40     linspace(0, 2*pi, 40) radians (0 and 2*pi both present)
posX                    32     linspace(0, 1, 32)
posY                    32     linspace(0, 1, 32)
======================  =====  =========================================================

Images are binary 64x64. One module per job, all names re-exported here:

* :mod:`~data_pipelines.dsprites.factors` -- the latents' sizes and values, row <-> class
  conversions (:func:`flat_index`), uniform factor sampling.
* :mod:`~data_pipelines.dsprites.geometry` -- the fitted sprite shapes, their areas and
  centroids.
* :mod:`~data_pipelines.dsprites.render` -- :func:`render` / :func:`render_from_classes`,
  pure JAX, so training needs no host data loading.
* :mod:`~data_pipelines.dsprites.official` -- :func:`load_official` / :func:`load_tfds` for
  the release itself (nothing is downloaded).
"""

from data_pipelines.dsprites.factors import (
    FACTOR_NAMES,
    FACTOR_SIZES,
    IMAGE_SIZE,
    LATENT_BASES,
    LATENT_NAMES,
    LATENT_SIZES,
    LATENT_VALUES,
    NUM_IMAGES,
    classes_from_flat_index,
    factor_classes_to_latent_classes,
    flat_index,
    latent_values_from_classes,
    sample_factor_classes,
)

# The fitted shape constants are public attributes, but not part of ``__all__``.
from data_pipelines.dsprites.geometry import ELLIPSE_SEMI_AXES as ELLIPSE_SEMI_AXES
from data_pipelines.dsprites.geometry import HEART_VERTICES as HEART_VERTICES
from data_pipelines.dsprites.geometry import HEART_X_AMPLITUDE as HEART_X_AMPLITUDE
from data_pipelines.dsprites.geometry import HEART_Y_AMPLITUDE as HEART_Y_AMPLITUDE
from data_pipelines.dsprites.geometry import HEART_Y_OFFSET as HEART_Y_OFFSET
from data_pipelines.dsprites.geometry import SQUARE_HALF_SIDE as SQUARE_HALF_SIDE
from data_pipelines.dsprites.geometry import shape_area, shape_centroid_offset
from data_pipelines.dsprites.official import (
    OFFICIAL_HDF5_NAME,
    OFFICIAL_NPZ_NAME,
    DSpritesData,
    load_official,
    load_tfds,
)
from data_pipelines.dsprites.render import render, render_from_classes, render_shape

__all__ = [
    "FACTOR_NAMES",
    "FACTOR_SIZES",
    "IMAGE_SIZE",
    "LATENT_BASES",
    "LATENT_NAMES",
    "LATENT_SIZES",
    "LATENT_VALUES",
    "NUM_IMAGES",
    "OFFICIAL_HDF5_NAME",
    "OFFICIAL_NPZ_NAME",
    "DSpritesData",
    "classes_from_flat_index",
    "factor_classes_to_latent_classes",
    "flat_index",
    "latent_values_from_classes",
    "load_official",
    "load_tfds",
    "render",
    "render_from_classes",
    "render_shape",
    "sample_factor_classes",
    "shape_area",
    "shape_centroid_offset",
]
