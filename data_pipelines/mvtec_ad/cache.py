"""The preprocessed-array cache: file names, the source fingerprint, atomic writes, reading back.

A cache file is trusted only while the fingerprint of its source files (relative paths, byte
sizes, mtimes) and of the preprocessing matches; it is written to a temporary name and
renamed into place, so a killed run never leaves a corrupt cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
import zipfile
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from data_pipelines.image_files import (
    CorruptFileError,
    _size_hw,
)
from data_pipelines.mvtec_ad.layout import (
    GOOD,
    Example,
)

CACHE_FORMAT_VERSION = 1


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


def cache_file_name(
    category: str,
    split: str,
    image_size: int | Sequence[int],
    channels: int = 3,
    resample: str = "bilinear",
) -> str:
    """File name of the preprocessed arrays, e.g. ``mvtec_bottle_train_256x256_c3_bilinear.npz``.

    Args:
      category: the category.
      split: ``"train"`` or ``"test"``.
      image_size: ``S`` or ``(H, W)``.
      channels: 1 or 3.
      resample: the resize filter name.

    Returns:
      The file name (no folder).
    """
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
