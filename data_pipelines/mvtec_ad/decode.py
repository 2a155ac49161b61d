"""Decoding MVTec-AD examples: image to the requested size and channels, mask to a binary map.

A defect image whose mask is empty is refused (unless ``allow_empty_masks``), since it would
count as anomalous with nothing to localize; an image and mask of different sizes are
refused too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_pipelines.image_files import (
    _convert_channels,
    _read_image,
    resize_image,
    run_indexed,
)
from data_pipelines.masks import mask_foreground, resize_binary_mask
from data_pipelines.mvtec_ad.layout import (
    Example,
)


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
