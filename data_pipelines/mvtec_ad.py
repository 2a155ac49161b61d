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

CLI (preprocess once, e.g. to carry 256x256 arrays to an accelerator machine)::

    python -m data_pipelines.mvtec_ad --data_dir=/path/to/mvtec --category=bottle \\
        --image_size=256 --out=prepared/mvtec

then, without the raw data: ``load_preprocessed("prepared/mvtec", "bottle", "train", 256)``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import pathlib
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import numpy as np
import PIL
from PIL import Image

from data_pipelines import batching

MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
GOOD = "good"
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
CACHE_FORMAT_VERSION = 1

Split = Literal["train", "test"]
ResampleName = Literal["bilinear", "bicubic", "lanczos", "box", "nearest"]
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}
_LAYOUT = (
    "expected the official MVTec-AD layout <root>/<category>/train/good/*.png, "
    "<root>/<category>/test/<defect>/*.png, "
    "<root>/<category>/ground_truth/<defect>/<name>_mask.png"
)


class CorruptFileError(ValueError):
    """An image or mask file exists but cannot be read or decoded (message names the path)."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One listed (not yet decoded) example.

    Attributes:
      image_path: absolute path of the image.
      mask_path: path of the ground-truth mask, ``None`` for good images.
      defect: defect type (the ``test/`` sub-folder name), ``"good"`` for normal images.
      label: 0 normal, 1 anomalous.
      rel_path: path relative to the dataset root, e.g. ``bottle/test/good/000.png``.
    """

    image_path: pathlib.Path
    mask_path: pathlib.Path | None
    defect: str
    label: int
    rel_path: str


# ----------------------------------------------------------------------------- helpers


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int | np.integer):
        h = w = int(image_size)
    else:
        if len(image_size) != 2:
            raise ValueError(f"image_size must be an int or (height, width); got {image_size!r}")
        h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive; got {image_size!r}")
    return h, w


def _is_visible_file(path: pathlib.Path) -> bool:
    """False for hidden/metadata files such as ``._000.png``, ``.DS_Store``, ``Thumbs.db``."""
    name = path.name
    return path.is_file() and not name.startswith(".") and name.lower() not in IGNORED_NAMES


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p for p in folder.iterdir() if _is_visible_file(p) and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _read_image(path: pathlib.Path) -> Image.Image:
    """Decode an image file fully; raise :class:`CorruptFileError` naming it on failure."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise CorruptFileError(f"cannot read image file {path}: {e}") from e


def _convert_channels(im: Image.Image, channels: int, path: pathlib.Path) -> Image.Image:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}")
    target = "RGB" if channels == 3 else "L"
    if im.mode == target:
        return im
    if im.mode in ("L", "RGB", "RGBA", "LA", "P", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        if im.mode in ("RGBA", "LA", "P") and target == "L":
            im = im.convert("RGB")
        return im.convert(target)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        arr = np.clip(arr / 257.0 if arr.max() > 255 else arr, 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert(target)
    raise CorruptFileError(f"unsupported image mode {im.mode!r} in {path}")


def resize_image(
    im: Image.Image, size_hw: tuple[int, int], resample: str = "bilinear"
) -> np.ndarray:
    """Resize a PIL image to ``size_hw = (H, W)``; returns uint8 ``(H, W)`` or ``(H, W, C)``."""
    h, w = size_hw
    if im.size != (w, h):
        im = im.resize((w, h), resample=_RESAMPLE[resample])
    return np.asarray(im, dtype=np.uint8)


_WIDE_MASK_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _format_values(values: np.ndarray) -> str:
    listed = [int(v) if float(v).is_integer() else float(v) for v in values.tolist()]
    if len(listed) <= 8:
        return f"values {listed}"
    return f"{len(listed)} distinct values [{listed[0]}, {listed[1]}, ..., {listed[-1]}]"


def mask_foreground(im: Image.Image, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Defect pixels of a binary mask in any encoding, bool ``(H, W)`` at full resolution.

    A binary mask has at most two gray levels, 0 (background) and one non-zero value
    (defect): 0/255 (MVTec-AD, UCSD), 0/1, bool (mode ``"1"``), a two-colour palette whose
    background is black, or 16-bit. Colour and palette masks are judged on their gray level
    (Pillow's ``convert("L")``); 16-bit and float masks on their raw values.

    Raises:
      ValueError: the mask has two or more distinct non-zero values (e.g. a JPEG-compressed
        or antialiased mask); the message names ``path`` and the values found.
    """
    if im.mode in _WIDE_MASK_MODES:
        arr = np.asarray(im)
        values = np.unique(arr)
    else:
        arr = np.asarray(im.convert("L"), dtype=np.uint8)
        values = np.flatnonzero(np.bincount(arr.ravel(), minlength=256))
    if np.count_nonzero(values) > 1:
        raise ValueError(
            f"mask {path if path is not None else '<image>'} is not binary: found "
            f"{_format_values(values)}; expected 0 for background and one other value for "
            "the defect (e.g. 0/255, 0/1, bool or a two-colour palette)"
        )
    return arr != 0


def resize_binary_mask(binary: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a bool/0-1 mask ``(h, w)`` to ``(H, W)``; uint8 in {0, 1}.

    The mask is resized as a float image with Pillow's bilinear filter (antialiased, so each
    output value is roughly the covered fraction of the output pixel) and thresholded at
    ``>= 0.5``.
    """
    h, w = size_hw
    binary = np.asarray(binary, dtype=bool)
    if binary.shape == (h, w):
        return binary.astype(np.uint8)
    f = Image.fromarray(binary.astype(np.float32), mode="F")
    resized = np.asarray(f.resize((w, h), resample=Image.Resampling.BILINEAR), dtype=np.float32)
    return (resized >= 0.5).astype(np.uint8)


def binarize_and_resize_mask(
    im: Image.Image, size_hw: tuple[int, int], *, path: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """:func:`mask_foreground` then :func:`resize_binary_mask`: uint8 ``(H, W)`` in {0, 1}."""
    return resize_binary_mask(mask_foreground(im, path), size_hw)


# ----------------------------------------------------------------------------- listing


def resolve_category_dir(root: str | os.PathLike[str], category: str) -> pathlib.Path:
    """Folder of ``category`` under ``root`` (or under ``root/mvtec_ad``).

    Raises:
      FileNotFoundError: ``root`` or the category folder is missing; the message lists the
        categories that are present.
      ValueError: ``category`` is not a plain folder name.
    """
    if not category or category != pathlib.Path(category).name or category in (".", ".."):
        raise ValueError(f"category must be a plain folder name such as 'bottle'; got {category!r}")
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MVTec-AD root folder {root} does not exist; {_LAYOUT}")
    for base in (root, root / "mvtec_ad"):
        if (base / category).is_dir():
            return base / category
    present = sorted(
        p.name for p in root.iterdir() if p.is_dir() and (p / "train").is_dir()
    ) or sorted(p.name for p in (root / "mvtec_ad").glob("*") if (p / "train").is_dir())
    hint = "" if category in MVTEC_CATEGORIES else f" (official categories: {MVTEC_CATEGORIES})"
    raise FileNotFoundError(
        f"unknown MVTec-AD category {category!r}: no folder {root / category}{hint}; "
        f"categories found under {root}: {present or 'none'}; {_LAYOUT}"
    )


def list_split(
    root: str | os.PathLike[str], category: str, split: Split = "train"
) -> list[Example]:
    """List the examples of a split without decoding anything.

    Order: ``train`` -- ``train/good`` sorted by file name; ``test`` -- defect folders in
    sorted order (``good`` included), files sorted by name within each.

    Raises:
      FileNotFoundError: missing category/split/defect folder, missing ``ground_truth``
        folder for a defect type, or a defect image without its ``<name>_mask.png``.
      ValueError: unknown split name, or an empty split/defect folder.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    cat_dir = resolve_category_dir(root, category)
    data_root = cat_dir.parent
    split_dir = cat_dir / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"missing folder {split_dir}; {_LAYOUT}")
    if split == "train":
        good = split_dir / GOOD
        if not good.is_dir():
            raise FileNotFoundError(f"missing folder {good} (normal training images); {_LAYOUT}")
        defect_dirs = [good]
    else:
        defect_dirs = sorted(
            p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not defect_dirs:
            raise ValueError(f"empty split: no defect-type folders in {split_dir}; {_LAYOUT}")

    examples: list[Example] = []
    for ddir in defect_dirs:
        files = _image_files(ddir)
        if not files:
            exts = "/".join(IMAGE_EXTENSIONS)
            raise ValueError(f"empty split: no image files ({exts}) in {ddir}")
        defect = ddir.name
        gt_dir = cat_dir / "ground_truth" / defect
        if defect != GOOD and not gt_dir.is_dir():
            raise FileNotFoundError(
                f"missing mask folder {gt_dir} for the defect images in {ddir}; {_LAYOUT}"
            )
        for f in files:
            mask_path = None
            if defect != GOOD:
                mask_path = gt_dir / f"{f.stem}_mask.png"
                if not mask_path.is_file():
                    alternatives = sorted(gt_dir.glob(f"{f.stem}_mask.*"))
                    if not alternatives:
                        raise FileNotFoundError(
                            f"defect image {f} has no mask: expected {mask_path}; {_LAYOUT}"
                        )
                    mask_path = alternatives[0]
            examples.append(
                Example(
                    image_path=f,
                    mask_path=mask_path,
                    defect=defect,
                    label=int(defect != GOOD),
                    rel_path=f.relative_to(data_root).as_posix(),
                )
            )
    return examples


def _fingerprint(examples: Sequence[Example], params: Mapping[str, object]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(dict(params), sort_keys=True).encode())
    for ex in examples:
        for p in (ex.image_path, ex.mask_path):
            if p is None:
                h.update(b"-\n")
                continue
            st = p.stat()
            h.update(f"{p.name}\t{ex.rel_path}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ----------------------------------------------------------------------------- decoding


def _process_example(
    ex: Example,
    size_hw: tuple[int, int],
    channels: int,
    resample: str,
    allow_empty_masks: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    im = _read_image(ex.image_path)
    orig_size = im.size
    arr = resize_image(_convert_channels(im, channels, ex.image_path), size_hw, resample)
    if arr.ndim == 2:
        arr = arr[..., None]
    if ex.mask_path is None:
        return arr, np.zeros(size_hw, dtype=np.uint8)
    m = _read_image(ex.mask_path)
    if m.size != orig_size:
        raise ValueError(
            f"size mismatch: image {ex.image_path} is {orig_size[0]}x{orig_size[1]} (WxH) but "
            f"its mask {ex.mask_path} is {m.size[0]}x{m.size[1]}"
        )
    binary = mask_foreground(m, ex.mask_path)
    if ex.label and not allow_empty_masks and not binary.any():
        raise ValueError(
            f"anomalous test image {ex.image_path} has an empty mask: {ex.mask_path} has no "
            "defect pixel (all 0); fix the mask, or pass allow_empty_masks=True to load it "
            "as an anomalous image without defect pixels"
        )
    return arr, resize_binary_mask(binary, size_hw)


def run_indexed(
    work: Callable[[int], object],
    n: int,
    *,
    num_workers: int | None,
    progress: bool,
    desc: str,
    unit: str,
) -> None:
    """Call ``work(i)`` for ``i < n`` on a thread pool (default ``min(8, cpus)`` threads),
    with an optional tqdm bar. Pillow releases the GIL while decoding and resizing, so
    threads scale; the first exception is re-raised."""
    workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=desc, unit=unit)
    try:
        if workers <= 1:
            for i in range(n):
                work(i)
                if bar is not None:
                    bar.update(1)
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(work, range(n)):
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()


def _decode_all(
    examples: Sequence[Example],
    size_hw: tuple[int, int],
    channels: int,
    resample: str,
    num_workers: int | None,
    progress: bool,
    desc: str,
    allow_empty_masks: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    n = len(examples)
    images = np.empty((n, *size_hw, channels), dtype=np.uint8)
    masks = np.empty((n, *size_hw), dtype=np.uint8)

    def work(i: int) -> None:
        images[i], masks[i] = _process_example(
            examples[i], size_hw, channels, resample, allow_empty_masks
        )

    run_indexed(work, n, num_workers=num_workers, progress=progress, desc=desc, unit="img")
    return images, masks


# ----------------------------------------------------------------------------- cache files


def cache_file_name(
    category: str,
    split: str,
    image_size: int | Sequence[int],
    channels: int = 3,
    resample: str = "bilinear",
) -> str:
    """File name of the preprocessed arrays, e.g. ``mvtec_bottle_train_256x256_c3_bilinear.npz``."""
    h, w = _size_hw(image_size)
    return f"mvtec_{category}_{split}_{h}x{w}_c{channels}_{resample}.npz"


def _write_npz_atomic(path: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _read_npz(path: pathlib.Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Read a preprocessed file; raise :class:`CorruptFileError` if it is unusable."""
    keys = ("image", "mask", "label", "defect", "path", "meta")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in keys}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CorruptFileError(f"unreadable preprocessed file {path}: {e}") from e
    n = len(arrays["label"])
    if (
        meta.get("version") != CACHE_FORMAT_VERSION
        or arrays["image"].dtype != np.uint8
        or arrays["image"].ndim != 4
        or any(len(a) != n for a in arrays.values())
    ):
        raise CorruptFileError(f"preprocessed file {path} has an unexpected format or version")
    return arrays, meta


def _finalize(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    defects = arrays["defect"]
    names = [GOOD] + sorted(set(defects.tolist()) - {GOOD})
    index = {d: i for i, d in enumerate(names)}
    return {
        "image": arrays["image"].astype(np.float32) / np.float32(255.0),
        "mask": arrays["mask"].astype(np.uint8),
        "label": arrays["label"].astype(np.int32),
        "defect": defects.astype(str),
        "defect_id": np.asarray([index[d] for d in defects.tolist()], dtype=np.int32),
        "path": arrays["path"].astype(str),
    }


# ----------------------------------------------------------------------------- public API


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

    Returns:
      The same dict as :func:`load_split`.
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


# ----------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Preprocess categories/splits to ``--out`` (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m data_pipelines.mvtec_ad",
        description="Preprocess MVTec-AD categories to .npz arrays (uint8 images and masks).",
    )
    parser.add_argument("--data_dir", required=True, help="folder holding the category folders")
    parser.add_argument(
        "--category", default="bottle", help="category name(s), comma separated, or 'all'"
    )
    parser.add_argument("--splits", default="train,test", help="comma separated splits")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3))
    parser.add_argument("--resample", default="bilinear", choices=sorted(_RESAMPLE))
    parser.add_argument("--num_workers", type=int, default=None)
    parser.add_argument("--out", required=True, help="output folder for the .npz files")
    args = parser.parse_args(argv)

    if args.category == "all":
        root = pathlib.Path(args.data_dir)
        categories = [
            c for c in MVTEC_CATEGORIES if (root / c).is_dir() or (root / "mvtec_ad" / c).is_dir()
        ]
        if not categories:
            parser.error(f"no official MVTec-AD category folders under {root}")
    else:
        categories = [c for c in args.category.split(",") if c]
    splits = [s for s in args.splits.split(",") if s]
    for category in categories:
        for split in splits:
            t0 = time.perf_counter()
            data = load_split(
                args.data_dir,
                category,
                split,  # type: ignore[arg-type]
                image_size=args.image_size,
                channels=args.channels,
                resample=args.resample,
                cache_dir=args.out,
                num_workers=args.num_workers,
                progress=True,
            )
            out = pathlib.Path(args.out) / cache_file_name(
                category, split, args.image_size, args.channels, args.resample
            )
            print(
                f"{category}/{split}: {len(data['label'])} images "
                f"({int(data['label'].sum())} anomalous) -> {out} "
                f"({out.stat().st_size / 2**20:.1f} MiB, {time.perf_counter() - t0:.1f}s)",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
