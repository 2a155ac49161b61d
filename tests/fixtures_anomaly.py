"""Generate tiny fixtures in the official MVTec-AD and UCSD Ped1 layouts (for tests).

Both writers are deterministic (seeded) and write real image files with Pillow, so the
pipelines are exercised exactly as on the released datasets, only much smaller.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

MASK_ENCODINGS: tuple[str, ...] = ("0/255", "0/1", "bool", "palette", "16bit", "rgb")


def save_mask(path: pathlib.Path, foreground: np.ndarray, encoding: str = "0/255") -> None:
    """Write a binary mask (``foreground``: bool ``(H, W)``) in one of :data:`MASK_ENCODINGS`.

    ``"0/255"`` 8-bit gray as released; ``"0/1"`` 8-bit gray with 1 for the defect;
    ``"bool"`` Pillow mode ``"1"``; ``"palette"`` mode ``"P"`` with indices 0/1 and a
    VOC-style palette (black, dark red: gray levels 0 and 38); ``"16bit"`` ``I;16`` with
    0/65535 (PNG only); ``"rgb"`` black/white RGB.
    """
    fg = np.asarray(foreground, dtype=bool)
    if encoding == "0/255":
        im = Image.fromarray(fg.astype(np.uint8) * 255, mode="L")
    elif encoding == "0/1":
        im = Image.fromarray(fg.astype(np.uint8), mode="L")
    elif encoding == "bool":
        im = Image.fromarray(fg)
    elif encoding == "palette":
        im = Image.fromarray(fg.astype(np.uint8), mode="P")
        im.putpalette([0, 0, 0, 128, 0, 0])
    elif encoding == "16bit":
        im = Image.fromarray(fg.astype(np.uint16) * 65535)
    elif encoding == "rgb":
        im = Image.fromarray(np.repeat(fg[..., None], 3, axis=-1).astype(np.uint8) * 255, "RGB")
    else:
        raise ValueError(f"unknown mask encoding {encoding!r}; one of {MASK_ENCODINGS}")
    im.save(path)


# Defect region drawn into defect images / masks of the MVTec fixture: rows, cols (slices
# of a 40x40 image), chosen so that it maps to whole pixels at 20x20.
MVTEC_DEFECT_BOX = (slice(10, 20), slice(20, 32))


def make_mvtec_category(
    root: pathlib.Path,
    category: str = "toy",
    *,
    size: int = 40,
    grayscale: bool = False,
    n_train: int = 4,
    n_test_good: int = 2,
    defects: Mapping[str, int] | None = None,
    seed: int = 0,
) -> pathlib.Path:
    """Write ``root/<category>/{train/good, test/<defect>, ground_truth/<defect>}``.

    Images are ``size x size`` PNGs (RGB, or 8-bit gray when ``grayscale``) of smooth
    random noise; defect images are brightened inside :data:`MVTEC_DEFECT_BOX` and get a
    0/255 mask ``NNN_mask.png`` covering it. Defaults: 4 train, 2 test/good, defect types
    ``crack`` (2 images) and ``hole`` (1 image). Returns the category folder.
    """
    defects = {"crack": 2, "hole": 1} if defects is None else defects
    rng = np.random.default_rng(seed)
    cat = root / category
    shape = (size, size) if grayscale else (size, size, 3)

    def image(defective: bool) -> Image.Image:
        arr = rng.integers(40, 160, size=shape, dtype=np.uint8)
        if defective:
            arr[MVTEC_DEFECT_BOX] = 250
        return Image.fromarray(arr, mode="L" if grayscale else "RGB")

    def write(folder: pathlib.Path, count: int, defective: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image(defective).save(folder / f"{i:03d}.png")

    write(cat / "train" / "good", n_train, False)
    write(cat / "test" / "good", n_test_good, False)
    for defect, count in defects.items():
        write(cat / "test" / defect, count, True)
        gt = cat / "ground_truth" / defect
        gt.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            mask = np.zeros((size, size), dtype=np.uint8)
            mask[MVTEC_DEFECT_BOX] = 255
            Image.fromarray(mask, mode="L").save(gt / f"{i:03d}_mask.png")
    return cat


# UCSD Ped1 frames are 238 wide x 158 high.
PED1_W, PED1_H = 238, 158
# Anomalous region of the fixture's pixel masks (rows, cols) at full resolution.
PED1_MASK_BOX = (slice(40, 80), slice(100, 160))
PED1_M_FILE = """TestDataset = {};
TestDataset{1}.gt_frame = [2:4];
% a comment: TestDataset{2}.gt_frame = [1:5];
TestDataset{2}.gt_frame = [1, 3:3, 5];
"""


def make_ucsd_ped1(
    root: pathlib.Path,
    *,
    n_train_clips: int = 2,
    n_test_clips: int = 2,
    n_frames: int = 5,
    gt_clips: Sequence[int] = (1,),
    m_text: str = PED1_M_FILE,
    stray_files: bool = True,
    seed: int = 0,
) -> pathlib.Path:
    """Write ``root/UCSD_Anomaly_Dataset.v1p2/UCSDped1`` in the official layout.

    ``Train/TrainNNN/NNN.tif`` and ``Test/TestNNN/NNN.tif`` (8-bit gray 238x158 TIFFs),
    ``Test/TestNNN_gt/NNN.bmp`` (0/255 masks, :data:`PED1_MASK_BOX` on the frames the
    default ``.m`` marks anomalous) for the 1-based clips in ``gt_clips``, and
    ``Test/UCSDped1.m`` with ``m_text``. With ``stray_files`` it also drops ``._001.tif``,
    ``.DS_Store`` and ``Thumbs.db`` files as found in the real archive. Returns the
    ``UCSDped1`` folder.
    """
    rng = np.random.default_rng(seed)
    ped1 = root / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped1"

    def clip(folder: pathlib.Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for f in range(1, n_frames + 1):
            arr = rng.integers(0, 256, size=(PED1_H, PED1_W), dtype=np.uint8)
            Image.fromarray(arr, mode="L").save(folder / f"{f:03d}.tif")
        if stray_files:
            (folder / "._001.tif").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
            (folder / "Thumbs.db").write_bytes(b"junk")

    for c in range(1, n_train_clips + 1):
        clip(ped1 / "Train" / f"Train{c:03d}")
    for c in range(1, n_test_clips + 1):
        clip(ped1 / "Test" / f"Test{c:03d}")
    from data_pipelines.ucsd_ped1 import parse_frame_gt

    anomalous = parse_frame_gt(m_text)
    for c in gt_clips:
        gt = ped1 / "Test" / f"Test{c:03d}_gt"
        gt.mkdir(parents=True, exist_ok=True)
        for f in range(1, n_frames + 1):
            mask = np.zeros((PED1_H, PED1_W), dtype=np.uint8)
            if f in anomalous.get(c, ()):
                mask[PED1_MASK_BOX] = 255
            Image.fromarray(mask, mode="L").save(gt / f"{f:03d}.bmp")
        if stray_files:
            (gt / "Thumbs.db").write_bytes(b"junk")
    (ped1 / "Test" / "UCSDped1.m").write_text(m_text)
    if stray_files:
        (ped1 / "Test" / ".DS_Store").write_bytes(b"junk")
        (ped1 / ".DS_Store").write_bytes(b"junk")
    return ped1
