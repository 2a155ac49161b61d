"""Ground-truth masks of the folder-based datasets (MVTec-AD, UCSD Ped1): binary in any
encoding, resized by covered fraction.

Masks may use any binary encoding -- 0/255 (the MVTec release), 0/1, bool (mode ``"1"``), a
two-colour palette, 16-bit: every pixel is 0 (background) or one single non-zero value
(defect), judged on the gray level. A mask with more values is refused, naming the file and
the values found, because a JPEG-compressed or antialiased mask would otherwise silently
move the defect's boundary.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

_WIDE_MASK_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _format_values(values: np.ndarray) -> str:
    listed = [int(v) if float(v).is_integer() else float(v) for v in values.tolist()]
    if len(listed) <= 8:
        return f"values {listed}"
    return f"{len(listed)} distinct values [{listed[0]}, {listed[1]}, ..., {listed[-1]}]"


def mask_foreground(im: Image.Image, path: str | os.PathLike[str] | None = None) -> np.ndarray:
    """Defect pixels of a binary mask in any encoding, at full resolution.

    A binary mask has at most two gray levels, 0 (background) and one non-zero value
    (defect): 0/255 (MVTec-AD, UCSD), 0/1, bool (mode ``"1"``), a two-colour palette whose
    background is black, or 16-bit. Colour and palette masks are judged on their gray level
    (Pillow's ``convert("L")``); 16-bit and float masks on their raw values.

    Args:
      im: the mask image.
      path: the file it came from, named in errors.

    Returns:
      bool ``(H, W)``.

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
    """Resize a binary mask by covered fraction.

    The mask is resized as a float image with Pillow's bilinear filter (antialiased, so each
    output value is roughly the covered fraction of the output pixel) and thresholded at
    ``>= 0.5``.

    Args:
      binary: bool or 0/1 ``(h, w)``.
      size_hw: target ``(H, W)``.

    Returns:
      uint8 ``(H, W)`` in {0, 1}.
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
    """:func:`mask_foreground` then :func:`resize_binary_mask`.

    Args:
      im: the mask image.
      size_hw: target ``(H, W)``.
      path: the file it came from, named in errors.

    Returns:
      uint8 ``(H, W)`` in {0, 1}.

    Raises:
      ValueError: the mask is not binary (see :func:`mask_foreground`).
    """
    return resize_binary_mask(mask_foreground(im, path), size_hw)
