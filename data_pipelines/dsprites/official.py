"""Loaders for the official dSprites release (``.npz`` / ``.hdf5``) and TFDS ``dsprites``.

Download ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (or the ``.hdf5`` variant) from
https://github.com/deepmind/dsprites-dataset and pass its path to :func:`load_official`;
``tensorflow_datasets`` users can call :func:`load_tfds` instead (TFDS name ``dsprites``).
Nothing here downloads anything. Both validate the arrays against the bookkeeping of
:mod:`data_pipelines.dsprites.factors`, so a damaged or reordered file is refused.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from data_pipelines.dsprites.factors import (
    IMAGE_SIZE,
    NUM_IMAGES,
    _check_classes,
    flat_index,
    latent_values_from_classes,
)

OFFICIAL_NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
OFFICIAL_HDF5_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"
_DOWNLOAD_HINT = f"download {OFFICIAL_NPZ_NAME} from https://github.com/deepmind/dsprites-dataset"


@dataclasses.dataclass(frozen=True)
class DSpritesData:
    """The official arrays, in the release's layout and dtypes.

    Attributes:
      imgs: uint8 (N, 64, 64) in {0, 1}, or None when loaded with ``load_images=False``.
      latents_classes: int64 (N, 6) (color, shape, scale, orientation, posX, posY).
      latents_values: float64 (N, 6).
      metadata: {} for the ``.npz`` release (its metadata entry is a pickled object, and data
        files are never unpickled; this module's constants hold the same information).
      source: where it came from (path or "tfds:<split>").
    """

    imgs: np.ndarray | None
    latents_classes: np.ndarray
    latents_values: np.ndarray
    metadata: dict
    source: str

    def __len__(self) -> int:
        return int(self.latents_classes.shape[0])


def load_official(
    path: str | pathlib.Path, *, load_images: bool = True, check_full: bool = False
) -> DSpritesData:
    """Load the official dSprites release (``.npz`` or ``.hdf5``) and validate it.

    The npz is read with ``np.load(allow_pickle=False)``: only the plain arrays ``imgs``,
    ``latents_classes`` and ``latents_values`` are read, so a file that is not an npz, or an
    array stored as a pickled object, is a ``ValueError`` and never code run on load; the
    release's ``metadata`` entry (a pickled dict) is skipped. Members are decompressed on
    access, so ``load_images=False`` skips the 3 GB image array. The hdf5 file needs ``h5py``
    (imported lazily).

    Args:
      path: the ``.npz`` / ``.hdf5`` file, or a folder containing one under its official name.
      load_images: read ``imgs`` (uint8, 737280 x 64 x 64 = 3 GB) or leave it None.
      check_full: also require all 737,280 rows in official order (row i has flat index i).

    Raises:
      FileNotFoundError: no such file (message says where to download it).
      ValueError: not an npz/hdf5 file, an entry stored as a pickled object, missing keys,
        wrong shapes / dtypes, classes inconsistent with values, or duplicated combinations.
      ImportError: an hdf5 file but h5py is not installed.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        for name in (OFFICIAL_NPZ_NAME, OFFICIAL_HDF5_NAME):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise FileNotFoundError(
                f"{p} has neither {OFFICIAL_NPZ_NAME} nor {OFFICIAL_HDF5_NAME}; {_DOWNLOAD_HINT}"
            )
    if not p.is_file():
        raise FileNotFoundError(f"dSprites file not found: {p}; {_DOWNLOAD_HINT}")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        imgs, classes, values, metadata = _read_npz(p, load_images)
    elif suffix in (".hdf5", ".h5"):
        imgs, classes, values, metadata = _read_hdf5(p, load_images)
    else:
        raise ValueError(f"{p}: expected an official .npz or .hdf5 dSprites file")
    return _validated(imgs, classes, values, metadata, str(p), check_full)


_NPZ_KEYS = (
    "expected imgs (N,64,64) uint8, latents_classes (N,6) int64, latents_values (N,6) float64"
)


def _read_npz(p: pathlib.Path, load_images: bool) -> tuple:
    # allow_pickle=False: a pickle (or an npz member holding an object array) is refused by
    # numpy before anything is unpickled, so an untrusted file cannot run code here.
    try:
        f = np.load(p, allow_pickle=False)
    except Exception as err:  # zipfile / npy-format errors come in several types
        raise ValueError(
            f"{p}: not a readable .npz archive ({err}); data files are never unpickled"
        ) from err
    if not hasattr(f, "files"):
        raise ValueError(f"{p}: expected an .npz archive, got a single array; {_NPZ_KEYS}")

    def member(key: str) -> np.ndarray:
        try:
            return np.asarray(f[key])
        except ValueError as err:  # an object array: numpy refuses without unpickling it
            raise ValueError(
                f"{p}: entry {key!r} is not a plain array ({err}); data files are never "
                f"unpickled; {_NPZ_KEYS}"
            ) from err
        except Exception as err:  # a damaged zip member
            raise ValueError(f"{p}: cannot read entry {key!r} ({err})") from err

    with f:
        missing = {"imgs", "latents_classes", "latents_values"} - set(f.files)
        if missing:
            raise ValueError(f"{p}: missing keys {sorted(missing)}; {_NPZ_KEYS}")
        classes = member("latents_classes")
        values = member("latents_values")
        imgs = member("imgs") if load_images else None
    return imgs, classes, values, {}


def _read_hdf5(p: pathlib.Path, load_images: bool) -> tuple:
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            f"reading {p} needs h5py (pip install h5py), or use the .npz release instead"
        ) from err
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise ValueError(f"{p}: not a readable HDF5 file ({err})") from err
    with f:
        for key in ("imgs", "latents/classes", "latents/values"):
            if key not in f:
                raise ValueError(
                    f"{p}: missing dataset {key!r}; expected imgs, latents/classes, "
                    "latents/values as in the official release"
                )
        classes = np.asarray(f["latents/classes"][()])
        values = np.asarray(f["latents/values"][()])
        imgs = np.asarray(f["imgs"][()]) if load_images else None
    return imgs, classes, values, {}


def _validated(
    imgs: np.ndarray | None,
    classes: np.ndarray,
    values: np.ndarray,
    metadata: dict,
    source: str,
    check_full: bool,
) -> DSpritesData:
    def fail(msg: str) -> None:
        raise ValueError(f"{source}: {msg}")

    if classes.ndim != 2 or classes.shape[1] != 6 or classes.dtype.kind not in "iu":
        fail(f"latents_classes must be int (N, 6), got {classes.dtype} {classes.shape}")
    n = classes.shape[0]
    if values.shape != (n, 6) or values.dtype.kind != "f":
        fail(f"latents_values must be float (N={n}, 6), got {values.dtype} {values.shape}")
    if imgs is not None:
        if imgs.shape != (n, IMAGE_SIZE, IMAGE_SIZE) or imgs.dtype != np.uint8:
            fail(f"imgs must be uint8 (N={n}, 64, 64), got {imgs.dtype} {imgs.shape}")
        probe = imgs[: min(n, 1024)]
        if probe.size and probe.max() > 1:
            fail("imgs must be binary {0, 1}")
    classes = classes.astype(np.int64)
    try:
        _check_classes(classes)
    except ValueError as err:
        fail(f"latents_classes: {err}")
    if not np.allclose(values, latent_values_from_classes(classes), atol=1e-5):
        fail("latents_values do not match the official values of latents_classes")
    flat = flat_index(classes)
    if check_full:
        if n != NUM_IMAGES or not np.array_equal(flat, np.arange(NUM_IMAGES)):
            fail(f"expected all {NUM_IMAGES} rows in official order (row i has flat index i)")
    elif np.unique(flat).size != n:
        fail("latents_classes contain duplicated combinations")
    return DSpritesData(imgs, classes, values.astype(np.float64), metadata, source)


def load_tfds(
    split: str = "train", *, data_dir: str | None = None, max_examples: int | None = None
) -> DSpritesData:
    """Load TFDS ``dsprites`` into the official layout (needs ``tensorflow_datasets``).

    TFDS stores the image as (64, 64, 1) and shape/scale/... classes and values as separate
    features; they are re-packed into ``latents_classes`` / ``latents_values`` with the
    constant color column prepended.

    Args:
      split: any TFDS split string (only ``"train"`` exists).
      data_dir: the TFDS data folder (default: TFDS's own).
      max_examples: load at most this many examples.

    Returns:
      A validated :class:`DSpritesData`.

    Raises:
      ImportError: ``tensorflow_datasets`` is not installed.
      ValueError: the loaded data fails validation.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "load_tfds needs tensorflow_datasets (pip install 'vae_xai[tfds]'); without it use "
            f"load_official on {OFFICIAL_NPZ_NAME} ({_DOWNLOAD_HINT})"
        ) from err
    ds = tfds.load("dsprites", split=split, data_dir=data_dir, shuffle_files=False)
    if max_examples is not None:
        ds = ds.take(max_examples)
    names = ("shape", "scale", "orientation", "x_position", "y_position")
    imgs, classes, values = [], [], []
    for ex in tfds.as_numpy(ds):
        imgs.append((np.asarray(ex["image"])[..., 0] > 0).astype(np.uint8))
        classes.append([0] + [int(ex[f"label_{k}"]) for k in names])
        values.append([1.0] + [float(ex[f"value_{k}"]) for k in names])
    return _validated(
        np.stack(imgs) if imgs else np.zeros((0, 64, 64), np.uint8),
        np.asarray(classes, np.int64).reshape(-1, 6),
        np.asarray(values, np.float64).reshape(-1, 6),
        {},
        f"tfds:dsprites/{split}",
        False,
    )
