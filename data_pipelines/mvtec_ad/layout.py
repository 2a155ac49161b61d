"""The official MVTec-AD folder layout: categories, and listing a split's images and masks.

Listing decodes nothing: it finds each image and, for a defect image, its
``ground_truth/<defect>/<name>_mask.png``, and refuses a layout it does not recognise with a
message that shows the expected one.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Literal

from data_pipelines.image_files import (
    _is_visible_file,
)

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

Split = Literal["train", "test"]
_LAYOUT = (
    "expected the official MVTec-AD layout <root>/<category>/train/good/*.png, "
    "<root>/<category>/test/<defect>/*.png, "
    "<root>/<category>/ground_truth/<defect>/<name>_mask.png"
)


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


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(
        p for p in folder.iterdir() if _is_visible_file(p) and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def resolve_category_dir(root: str | os.PathLike[str], category: str) -> pathlib.Path:
    """Folder of ``category`` under ``root`` (or under ``root/mvtec_ad``).

    Args:
      root: the dataset root.
      category: a category folder name, e.g. ``"bottle"``.

    Returns:
      The category folder.

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

    Args:
      root: the dataset root.
      category: the category folder name.
      split: ``"train"`` or ``"test"``.

    Returns:
      One :class:`Example` per image.

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
