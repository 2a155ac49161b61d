"""Loading MVTec-AD splits (from the raw files, through the cache) and batching them."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import PIL

from data_pipelines import batching
from data_pipelines.image_files import (
    _RESAMPLE,
    CorruptFileError,
    ResampleName,
    _size_hw,
)
from data_pipelines.mvtec_ad.cache import (
    CACHE_FORMAT_VERSION,
    _finalize,
    _fingerprint,
    _read_npz,
    _write_npz_atomic,
    cache_file_name,
)
from data_pipelines.mvtec_ad.decode import _decode_all
from data_pipelines.mvtec_ad.layout import (
    Split,
    list_split,
)


def load_split(
    root: str | os.PathLike[str],
    category: str,
    split: Split = "train",
    *,
    image_size: int | tuple[int, int] = 256,
    channels: int = 3,
    resample: ResampleName = "bilinear",
    cache_dir: str | os.PathLike[str] | None = None,
    num_workers: int | None = None,
    progress: bool = False,
    allow_empty_masks: bool = False,
) -> dict[str, np.ndarray]:
    """Load a whole MVTec-AD split as arrays (for evaluation, or to batch for training).

    Args:
      root: folder holding the category folders (or a folder holding ``mvtec_ad/``).
      category: category folder name, e.g. ``"bottle"``.
      split: ``"train"`` (``train/good`` only) or ``"test"`` (all ``test/`` sub-folders).
      image_size: output size ``S`` (square) or ``(H, W)``.
      channels: 3 (gray categories replicated to RGB) or 1 (luminance).
      resample: Pillow filter for the images (masks: see module docstring).
      cache_dir: if set, read/write the preprocessed arrays there (see module docstring).
      num_workers: decoding threads (default ``min(8, cpu_count)``).
      progress: show a tqdm progress bar while decoding.
      allow_empty_masks: load a defect image whose mask has no defect pixel (by default
        that is an error naming the files: the image would count as anomalous with no
        pixel to localize).

    Returns:
      dict with N examples, S = image size:
        ``image``: float32 ``(N, H, W, channels)`` in [0, 1];
        ``mask``: uint8 ``(N, H, W)`` in {0, 1} (all zero for good images);
        ``label``: int32 ``(N,)``, 0 normal / 1 anomalous;
        ``defect``: str ``(N,)`` defect type, ``"good"`` for normal images;
        ``defect_id``: int32 ``(N,)``, 0 for ``good``, then defect types in sorted order;
        ``path``: str ``(N,)`` path relative to the dataset root, e.g.
        ``bottle/test/broken_large/000.png``.

    Raises:
      FileNotFoundError, ValueError, CorruptFileError: layout problems, empty splits,
        image/mask size mismatch, unreadable files, a mask that is not binary, a defect
        image with an empty mask; each message names the path.
    """
    size_hw = _size_hw(image_size)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    if resample not in _RESAMPLE:
        raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}; got {resample!r}")
    examples = list_split(root, category, split)
    params = {
        "version": CACHE_FORMAT_VERSION,
        "pillow": PIL.__version__,
        "category": category,
        "split": split,
        "size_hw": list(size_hw),
        "channels": channels,
        "resample": resample,
        "masks": "nonzero",  # mask decoding: any binary encoding, foreground = non-zero
        "allow_empty_masks": bool(allow_empty_masks),
    }
    fingerprint = _fingerprint(examples, params)

    cache_path = None
    if cache_dir is not None:
        cache_path = pathlib.Path(cache_dir) / cache_file_name(
            category, split, size_hw, channels, resample
        )
        if cache_path.is_file():
            try:
                arrays, meta = _read_npz(cache_path)
            except CorruptFileError:
                pass  # rebuilt below
            else:
                if meta.get("fingerprint") == fingerprint:
                    return _finalize(arrays)

    images, masks = _decode_all(
        examples,
        size_hw,
        channels,
        resample,
        num_workers,
        progress,
        f"{category}/{split}",
        allow_empty_masks,
    )
    arrays = {
        "image": images,
        "mask": masks,
        "label": np.asarray([ex.label for ex in examples], dtype=np.int32),
        "defect": np.asarray([ex.defect for ex in examples], dtype=str),
        "path": np.asarray([ex.rel_path for ex in examples], dtype=str),
    }
    if cache_path is not None:
        meta = dict(params, fingerprint=fingerprint, count=len(examples))
        _write_npz_atomic(cache_path, {**arrays, "meta": np.asarray(json.dumps(meta))})
    return _finalize(arrays)


def load_preprocessed(
    path: str | os.PathLike[str],
    category: str | None = None,
    split: Split | None = None,
    image_size: int | tuple[int, int] | None = None,
    *,
    channels: int = 3,
    resample: ResampleName = "bilinear",
) -> dict[str, np.ndarray]:
    """Load arrays written by the CLI or the cache, without the raw dataset.

    Args:
      path: an ``.npz`` file, or the folder it is in (then ``category``, ``split`` and
        ``image_size`` pick the file name, see :func:`cache_file_name`).
      category: the category, for a folder ``path``.
      split: ``"train"`` or ``"test"``, for a folder ``path``.
      image_size: ``S`` or ``(H, W)``, for a folder ``path``.
      channels: 1 or 3, for a folder ``path``.
      resample: the resize filter name, for a folder ``path``.

    Returns:
      The same dict as :func:`load_split`.

    Raises:
      ValueError: a folder ``path`` without ``category``, ``split`` and ``image_size``.
      FileNotFoundError: the file does not exist.
      CorruptFileError: the file cannot be read.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        if category is None or split is None or image_size is None:
            raise ValueError(f"{p} is a folder: pass category, split and image_size")
        p = p / cache_file_name(category, split, image_size, channels, resample)
    if not p.is_file():
        raise FileNotFoundError(
            f"preprocessed file {p} does not exist; create it with "
            "`python -m data_pipelines.mvtec_ad --data_dir=... --category=... --out=...`"
        )
    arrays, _ = _read_npz(p)
    return _finalize(arrays)


def iterate_batches(
    data: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    seed: int | None = 0,
    shuffle: bool = True,
    epochs: int | None = 1,
    drop_remainder: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield NumPy batches (dicts with the same keys, leading axis sliced) from whole arrays.

    The batches of :func:`data_pipelines.batching.epoch_batch_fn` in step order (epoch ``e``
    is the permutation of ``np.random.default_rng([seed, e])``), so a training loop can use
    that function's ``step -> batch`` form and see the same data.

    Args:
      data: dict of arrays sharing the leading dimension N (e.g. from :func:`load_split`).
      batch_size: examples per batch B.
      seed: seeds the per-epoch permutations; ``None`` draws a fresh seed.
      shuffle: shuffle each epoch (else the stored order).
      epochs: number of passes; ``None`` repeats forever.
      drop_remainder: drop the last incomplete batch of each epoch (so every batch is B).

    Yields:
      dict ``key -> array[(B, ...)]`` (the last batch of an epoch may be smaller when
      ``drop_remainder=False``).
    """
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % 2**63)
    yield from batching.iterate_epochs(
        dict(data),
        batch_size,
        seed=seed,
        shuffle=shuffle,
        epochs=epochs,
        drop_remainder=drop_remainder,
    )
