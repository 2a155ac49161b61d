"""MNIST from the standard IDX files (gzipped or not), or TFDS ``mnist`` when installed.

Download the four files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) from Yann LeCun's MNIST page or
any mirror (e.g. the ``mnist`` dataset of TensorFlow Datasets or ``torchvision``'s raw folder)
into one folder and pass it as ``data_dir``. The IDX headers are read and checked directly;
no checksum of a particular archive is required, so re-compressed copies work.

Images are returned as float32 ``(N, 28, 28, 1)`` in ``[0, 1]`` and labels as int32 ``(N,)``.
"""

from __future__ import annotations

import gzip
import pathlib
from collections.abc import Sequence

import numpy as np

from data_pipelines import batching

__all__ = [
    "FILES",
    "MNISTFormatError",
    "batch_at",
    "load",
    "load_one_class",
    "read_idx",
]

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MNISTFormatError(ValueError):
    """A file exists but is not a valid IDX file of the expected shape."""


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a NumPy array, checking its header.

    Args:
      path: the file.

    Returns:
      The array, with the shape and dtype of the header, in native byte order.

    Raises:
      MNISTFormatError: the file cannot be read, is not IDX, or is truncated.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise MNISTFormatError(f"cannot read {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise MNISTFormatError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MNISTFormatError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise MNISTFormatError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header} bytes of data (truncated or corrupt)"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(data_dir: pathlib.Path, stem: str) -> pathlib.Path:
    for name in (stem + ".gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"MNIST file {stem}[.gz] not found in {data_dir}; expected the four standard IDX files "
        f"{[f + '.gz' for pair in FILES.values() for f in pair]} (see data_pipelines/mnist.py)"
    )


def _load_tfds(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "source='tfds' needs tensorflow-datasets: pip install 'vae_xai[tfds]' "
            "(or pass data_dir with the IDX files)"
        ) from e
    ds = tfds.as_numpy(tfds.load("mnist", split=split, batch_size=-1, download=False))
    return ds["image"], ds["label"]


def load(
    data_dir: str | pathlib.Path | None, split: str = "train", *, source: str = "idx"
) -> tuple[np.ndarray, np.ndarray]:
    """All images ``(N, 28, 28, 1)`` float32 in [0, 1] and labels ``(N,)`` int32 of a split.

    Args:
      data_dir: folder with the IDX files (``source="idx"``).
      split: ``"train"`` (60000) or ``"test"`` (10000).
      source: ``"idx"`` (default) or ``"tfds"`` (needs TFDS's prepared ``mnist``; never
        downloads, so an offline machine fails fast).

    Returns:
      ``(images, labels)``.

    Raises:
      ValueError: unknown ``split``/``source``, or no ``data_dir`` for ``source="idx"``.
      FileNotFoundError: ``data_dir`` or one of its IDX files is missing.
      MNISTFormatError: a file is not a valid IDX file of the expected shape.
      ImportError: ``source="tfds"`` without ``tensorflow_datasets``.
    """
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}; got {split!r}")
    if source == "tfds":
        images, labels = _load_tfds(split)
    elif source == "idx":
        if data_dir is None:
            raise ValueError("data_dir is required for source='idx' (the folder of IDX files)")
        data_dir = pathlib.Path(data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"MNIST data_dir {data_dir} does not exist")
        img_stem, lbl_stem = FILES[split]
        images = read_idx(_find(data_dir, img_stem))
        labels = read_idx(_find(data_dir, lbl_stem))
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise MNISTFormatError(
                f"{img_stem}: expected uint8 images (N, 28, 28); got {images.dtype} {images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise MNISTFormatError(
                f"{lbl_stem}: {labels.shape[0]} labels for {images.shape[0]} images"
            )
    else:
        raise ValueError(f"source must be 'idx' or 'tfds'; got {source!r}")
    images = np.asarray(images, np.float32).reshape(-1, 28, 28, 1) / 255.0
    return images, np.asarray(labels, np.int32).reshape(-1)


def load_one_class(
    data_dir: str | pathlib.Path | None,
    split: str,
    digits: int | Sequence[int],
    *,
    source: str = "idx",
) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of ``split`` restricted to ``digits`` (one-class training data).

    Args:
      data_dir: as for :func:`load`.
      split: as for :func:`load`.
      digits: one digit or several, each in 0..9.
      source: as for :func:`load`.

    Returns:
      ``(images (n, 28, 28, 1) float32, labels (n,) int32)``.

    Raises:
      ValueError: a digit outside 0..9, or as :func:`load`.
    """
    wanted = [digits] if isinstance(digits, int) else list(digits)
    if not wanted or any(not 0 <= int(d) <= 9 for d in wanted):
        raise ValueError(f"digits must be in 0..9; got {digits!r}")
    images, labels = load(data_dir, split, source=source)
    keep = np.isin(labels, wanted)
    return images[keep], labels[keep]


def batch_at(images: np.ndarray, batch_size: int, step: int, *, seed: int = 0) -> np.ndarray:
    """The batch of training ``step``: a deterministic function of the step (for resuming).

    Each epoch is a permutation seeded by ``(seed, epoch)``; partial batches are dropped.
    A thin wrapper of :func:`data_pipelines.batching.epoch_batch_fn` (build that once for a
    training loop instead of calling this per step).

    Args:
      images: ``(N, ...)``.
      batch_size: examples per batch.
      step: the training step.
      seed: seeds the per-epoch permutations.

    Returns:
      ``(batch_size, ...)``.
    """
    return batching.epoch_batch_fn(images, batch_size, seed=seed)(step)
