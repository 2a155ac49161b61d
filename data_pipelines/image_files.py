"""Reading image files for the folder-based datasets (MVTec-AD, UCSD Ped1).

Both read many small files: each is decoded fully with Pillow (a damaged file raises
:class:`CorruptFileError` naming it, not a Pillow error from deep inside a batch), converted
to the requested channels and resized; :func:`run_indexed` decodes them on a thread pool,
since Pillow releases the GIL while decoding and resizing.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from PIL import Image

IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
ResampleName = Literal["bilinear", "bicubic", "lanczos", "box", "nearest"]
_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "nearest": Image.Resampling.NEAREST,
}


class CorruptFileError(ValueError):
    """An image or mask file exists but cannot be read or decoded (message names the path)."""


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
    """Resize a PIL image to ``(H, W)`` and return its pixels.

    Args:
      im: the image.
      size_hw: target ``(H, W)``.
      resample: Pillow filter name: ``"bilinear"``, ``"bicubic"``, ``"lanczos"``, ``"box"``
        or ``"nearest"``.

    Returns:
      uint8 ``(H, W)`` or ``(H, W, C)``.
    """
    h, w = size_hw
    if im.size != (w, h):
        im = im.resize((w, h), resample=_RESAMPLE[resample])
    return np.asarray(im, dtype=np.uint8)


def run_indexed(
    work: Callable[[int], object],
    n: int,
    *,
    num_workers: int | None,
    progress: bool,
    desc: str,
    unit: str,
) -> None:
    """Call ``work(i)`` for every ``i < n`` on a thread pool.

    Pillow releases the GIL while decoding and resizing, so threads scale.

    Args:
      work: the per-item function; its return value is ignored.
      n: number of items.
      num_workers: threads; ``None``: ``min(8, cpus)``; ``<= 1`` runs in this thread.
      progress: show a tqdm bar.
      desc: the bar's description.
      unit: the bar's unit.

    Raises:
      Exception: the first exception raised by ``work``, re-raised.
    """
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
