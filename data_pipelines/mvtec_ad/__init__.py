"""MVTec-AD pipeline: any category, official folder layout, cached preprocessed arrays.

Download
--------
MVTec Anomaly Detection (MVTec-AD, Bergmann et al., CVPR 2019), CC BY-NC-SA 4.0, from
https://www.mvtec.com/company/research/datasets/mvtec-ad . Nothing is downloaded here:
every function reads files you already have.

Expected layout (the official release, one folder per category)::

    <root>/<category>/train/good/000.png ...          normal training images
    <root>/<category>/test/good/000.png ...           normal test images (no masks)
    <root>/<category>/test/<defect>/000.png ...       anomalous test images
    <root>/<category>/ground_truth/<defect>/000_mask.png ...   one mask per defect image

``root`` is the folder holding the category folders (``mvtec_anomaly_detection/``); a
folder that contains ``mvtec_ad/<category>`` is accepted too. The 15 official categories
are listed in :data:`MVTEC_CATEGORIES`, but any category folder in this layout is loaded.

Preprocessing
-------------
* Images are decoded with Pillow and resized to ``image_size`` with ``resample``
  (``"bilinear"`` by default; Pillow's resize filters are antialiased when downsampling,
  i.e. the filter support widens with the scale factor).
* ``channels=3`` (default) converts single-channel categories (grid, screw, zipper ship
  8-bit grayscale PNGs) to RGB by replicating the gray level; ``channels=1`` converts RGB
  categories to luminance (ITU-R 601-2, Pillow's ``convert("L")``).
* Masks may use any binary encoding -- 0/255 (the official release), 0/1, bool (mode
  ``"1"``), a two-colour palette, 16-bit: every pixel is 0 (background) or one single
  non-zero value (defect), judged on the gray level (palette colours are converted).
  A mask with more values raises ``ValueError`` naming the file and the values found,
  and a defect image whose mask has no defect pixel raises ``ValueError`` naming both
  files (``allow_empty_masks=True`` loads it anyway). The binary mask is resized at
  full resolution as a float image with Pillow's (antialiased) bilinear filter --
  giving the covered fraction of each output pixel -- and thresholded at ``>= 0.5``. A
  defect far smaller than an output pixel can therefore vanish at small sizes (that is
  not an error). Good test images get all-zero masks (the official release has no mask
  files for them).
* The returned images are ``uint8 / 255`` as float32; cached arrays are stored as uint8,
  so a cache hit returns bit-identical arrays.

Cache
-----
With ``cache_dir`` set, :func:`load_split` stores the preprocessed uint8 arrays in
``<cache_dir>/mvtec_<category>_<split>_<H>x<W>_c<channels>_<resample>.npz`` together with
a fingerprint of the source files (relative paths, byte sizes, mtimes) and of the
preprocessing (format version, Pillow version, mask rules). A later call with the same
settings lists and stats the files but decodes nothing when the fingerprint matches; a
stale, truncated or otherwise unreadable cache file is rebuilt. Files are written to a
temporary name in the same folder and renamed into place, so a killed run never leaves a
corrupt cache.

One module per job, all names re-exported here: :mod:`~data_pipelines.mvtec_ad.layout`
(categories, listing), :mod:`~data_pipelines.mvtec_ad.decode` (images and masks to arrays),
:mod:`~data_pipelines.mvtec_ad.cache` (preprocessed files), :mod:`~data_pipelines.mvtec_ad.load`
(:func:`load_split`, :func:`load_preprocessed`, :func:`iterate_batches`) and
:mod:`~data_pipelines.mvtec_ad.cli`; image-file reading and mask binarization, shared with
UCSD Ped1, are :mod:`data_pipelines.image_files` and :mod:`data_pipelines.masks`.

CLI (preprocess once, e.g. to carry 256x256 arrays to an accelerator machine)::

    python -m data_pipelines.mvtec_ad --data_dir=/path/to/mvtec --category=bottle \\
        --image_size=256 --out=prepared/mvtec

then, without the raw data: ``load_preprocessed("prepared/mvtec", "bottle", "train", 256)``.
"""

from data_pipelines.image_files import (
    IGNORED_NAMES,
    CorruptFileError,
    ResampleName,
    resize_image,
    run_indexed,
)
from data_pipelines.masks import binarize_and_resize_mask, mask_foreground, resize_binary_mask
from data_pipelines.mvtec_ad.cache import CACHE_FORMAT_VERSION, cache_file_name
from data_pipelines.mvtec_ad.cli import main
from data_pipelines.mvtec_ad.layout import (
    GOOD,
    IMAGE_EXTENSIONS,
    MVTEC_CATEGORIES,
    Example,
    Split,
    list_split,
    resolve_category_dir,
)
from data_pipelines.mvtec_ad.load import iterate_batches, load_preprocessed, load_split

__all__ = [
    "CACHE_FORMAT_VERSION",
    "CorruptFileError",
    "Example",
    "GOOD",
    "IGNORED_NAMES",
    "IMAGE_EXTENSIONS",
    "MVTEC_CATEGORIES",
    "ResampleName",
    "Split",
    "binarize_and_resize_mask",
    "cache_file_name",
    "iterate_batches",
    "list_split",
    "load_preprocessed",
    "load_split",
    "main",
    "mask_foreground",
    "resize_binary_mask",
    "resize_image",
    "resolve_category_dir",
    "run_indexed",
]
