"""``python -m data_pipelines.mvtec_ad``: preprocess categories to ``.npz`` arrays once.

For example to carry 256x256 arrays to an accelerator machine::

    python -m data_pipelines.mvtec_ad --data_dir=/path/to/mvtec --category=bottle \\
        --image_size=256 --out=prepared/mvtec

then, without the raw data: ``load_preprocessed("prepared/mvtec", "bottle", "train", 256)``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from collections.abc import Sequence

from data_pipelines.image_files import _RESAMPLE
from data_pipelines.mvtec_ad.cache import (
    cache_file_name,
)
from data_pipelines.mvtec_ad.layout import (
    MVTEC_CATEGORIES,
)
from data_pipelines.mvtec_ad.load import load_split


def main(argv: Sequence[str] | None = None) -> int:
    """Preprocess categories/splits to ``--out`` (see the module docstring).

    Args:
      argv: the command-line arguments; ``None``: ``sys.argv[1:]``.

    Returns:
      The process exit status.
    """
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
