"""UCSD Ped1 pipeline (video anomaly localization), official v1p2 folder layout.

Download
--------
UCSD Anomaly Detection Dataset (Mahadevan et al., CVPR 2010), archive
``UCSD_Anomaly_Dataset.tar.gz`` from http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm .
Nothing is downloaded here: every function reads files you already have.

Expected layout (``UCSD_Anomaly_Dataset.v1p2`` after extraction)::

    UCSD_Anomaly_Dataset.v1p2/UCSDped1/
        Train/Train001/001.tif ... 200.tif     34 normal clips (Train001 .. Train034)
        Test/Test001/001.tif ... 200.tif       36 test clips (Test001 .. Test036)
        Test/Test003_gt/001.bmp ... 200.bmp    pixel masks (0/255) for some test clips
        Test/UCSDped1.m                        frame-level ground truth (MATLAB)

Frames are 8-bit grayscale TIFFs, 238 wide x 158 high; a frame of another size is an error
unless ``check_frame_size=False``. ``root`` may be the ``UCSD_Anomaly_Dataset.v1p2`` folder,
the ``UCSDped1`` folder, or a folder holding either. The original release has pixel masks
for 10 clips (:data:`OFFICIAL_PIXEL_GT_CLIPS`); extended annotation sets add more
``TestNNN_gt`` folders -- every clip with a ``_gt`` folder is used. Clip and mask folders
must be spelled as in the release (``Train001``, ``Test001``, ``Test001_gt``: three digits);
a folder that names a clip otherwise (``Test1``, ``test001``, ``Test0001_gt``) is refused
rather than guessed, since beside ``Test001`` it would load clip 1 twice. The labels must be
in ``Test/UCSDped1.m`` (another ``.m`` file, such as Ped2's ``UCSDped2.m``, is never used).
Stray files (``._001.tif``, ``.DS_Store``, ``Thumbs.db``) are ignored.

The frame-level ground truth ``UCSDped1.m`` has lines such as::

    TestDataset{1}.gt_frame = [60:152];
    TestDataset{11}.gt_frame = [1:30, 50:100];

(1-based, inclusive frame ranges), parsed by :func:`parse_frame_gt`.

Preprocessing: frames are resized with Pillow's (antialiased) bilinear filter to
``image_size = (H, W)`` -- the paper uses 100x100 grayscale -- and scaled to [0, 1].
Masks may use any binary encoding (0/255 as released, 0/1, bool, a two-colour palette;
see :func:`data_pipelines.masks.mask_foreground`); a mask with more than one non-zero
value is an error naming the file, and so is an empty mask on a frame that ``UCSDped1.m``
marks anomalous (``allow_empty_masks=True`` loads it anyway). Masks are resized as floats
with the same filter and thresholded at ``>= 0.5``.
Batch with :func:`iterate_batches` (re-exported from :mod:`data_pipelines.mvtec_ad`).
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Sequence

import numpy as np

from data_pipelines.image_files import (
    CorruptFileError,
    _is_visible_file,
    _read_image,
    _size_hw,
    resize_image,
    run_indexed,
)
from data_pipelines.masks import mask_foreground, resize_binary_mask
from data_pipelines.mvtec_ad import iterate_batches

__all__ = [
    "CorruptFileError",
    "FRAME_SIZE_WH",
    "data_files",
    "OFFICIAL_PIXEL_GT_CLIPS",
    "frame_labels",
    "iterate_batches",
    "load_test",
    "load_train",
    "parse_frame_gt",
    "parse_frame_gt_file",
    "resolve_ped1_dir",
]

FRAME_SIZE_WH: tuple[int, int] = (238, 158)
OFFICIAL_PIXEL_GT_CLIPS: tuple[str, ...] = tuple(
    f"Test{i:03d}" for i in (3, 4, 14, 18, 19, 21, 22, 23, 24, 32)
)
GT_FILE_NAME = "UCSDped1.m"
_LAYOUT = (
    "expected the official layout UCSDped1/Train/TrainNNN/NNN.tif, "
    "UCSDped1/Test/TestNNN/NNN.tif, UCSDped1/Test/TestNNN_gt/NNN.bmp, "
    "UCSDped1/Test/UCSDped1.m"
)
# Official spellings (three digits), and anything else that would name a clip or mask folder.
_CLIP_RE = {"Train": re.compile(r"^Train(\d{3})$"), "Test": re.compile(r"^Test(\d{3})$")}
_GT_DIR_RE = re.compile(r"^Test(\d{3})_gt$")
_LOOSE_DIR_RE = {
    "Train": re.compile(r"^train[ _-]?(\d+)()$", re.IGNORECASE),
    "Test": re.compile(r"^test[ _-]?(\d+)([ _-]?gt)?$", re.IGNORECASE),
}
_ENTRY_RE = re.compile(
    r"TestDataset\s*\{\s*(\d+)\s*\}\s*\.\s*gt_frame\s*=\s*(\[[^\]]*\]|[^;\n]*)", re.IGNORECASE
)


# ----------------------------------------------------------------------------- .m parsing


def parse_frame_gt(text: str, *, source: str = "<string>") -> dict[int, np.ndarray]:
    """Parse the MATLAB frame-level ground truth of UCSD Ped1/Ped2.

    Accepts ``TestDataset{k}.gt_frame = [a:b];`` with any number of comma/space separated
    ranges (``a:b``, ``a:step:b``) or single frames, ``%`` comments, arbitrary whitespace,
    brackets spanning lines, and an empty ``[]``. A repeated ``k`` keeps the last
    assignment (MATLAB semantics).

    Args:
      text: contents of the ``.m`` file.
      source: name used in error messages.

    Returns:
      ``{k: int32 array}`` mapping the 1-based clip number ``k`` (``TestNNN``) to the
      sorted, unique 1-based anomalous frame numbers.

    Raises:
      ValueError: an entry that cannot be parsed (message names ``source`` and the entry),
        or no entries at all.
    """
    text = re.sub(r"%[^\n]*", "", text)
    out: dict[int, np.ndarray] = {}
    for m in _ENTRY_RE.finditer(text):
        clip = int(m.group(1))
        body = m.group(2).strip()
        if body.startswith("["):
            body = body[1:-1]
        body = re.sub(r"\s*:\s*", ":", body.replace("...", " "))
        frames: list[int] = []
        for token in re.split(r"[\s,;]+", body.strip()):
            if not token:
                continue
            parts = token.split(":")
            try:
                nums = [int(p) for p in parts]
            except ValueError:
                raise ValueError(
                    f"{source}: cannot parse frame range {token!r} in entry {m.group(0).strip()!r}"
                ) from None
            if len(nums) == 1:
                frames.append(nums[0])
            elif len(nums) == 2:
                frames.extend(range(nums[0], nums[1] + 1))
            elif len(nums) == 3 and nums[1] != 0:
                frames.extend(range(nums[0], nums[2] + (1 if nums[1] > 0 else -1), nums[1]))
            else:
                raise ValueError(
                    f"{source}: cannot parse frame range {token!r} in entry {m.group(0).strip()!r}"
                )
        if any(f < 1 for f in frames):
            raise ValueError(f"{source}: frame numbers are 1-based; got {m.group(0).strip()!r}")
        out[clip] = np.unique(np.asarray(frames, dtype=np.int32))
    if not out:
        raise ValueError(f"{source}: no 'TestDataset{{k}}.gt_frame = [...]' entries found")
    return out


def parse_frame_gt_file(path: str | os.PathLike[str]) -> dict[int, np.ndarray]:
    """Read and parse a ``UCSDped1.m`` file (see :func:`parse_frame_gt`).

    Args:
      path: the file.

    Returns:
      ``{clip number: sorted 1-based anomalous frame numbers}``, as :func:`parse_frame_gt`.

    Raises:
      FileNotFoundError: the file is missing.
      CorruptFileError: the file cannot be read.
      ValueError: the contents cannot be parsed.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing frame-level ground truth file {path}; {_LAYOUT}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise CorruptFileError(f"cannot read {path}: {e}") from e
    return parse_frame_gt(text, source=str(path))


def frame_labels(anomalous_frames: np.ndarray, frame_numbers: Sequence[int]) -> np.ndarray:
    """Frame labels from the anomalous frames of a clip.

    Args:
      anomalous_frames: 1-based anomalous frame numbers.
      frame_numbers: 1-based numbers of the frames to label.

    Returns:
      int32 ``(len(frame_numbers),)``, 1 for anomalous.
    """
    return np.isin(np.asarray(frame_numbers), anomalous_frames).astype(np.int32)


# ----------------------------------------------------------------------------- layout


def resolve_ped1_dir(root: str | os.PathLike[str]) -> pathlib.Path:
    """Find the ``UCSDped1`` folder (holding ``Train/`` and ``Test/``) under ``root``.

    Args:
      root: the folder itself, or a folder above it (``UCSDped1``,
        ``UCSD_Anomaly_Dataset.v1p2/UCSDped1``, ``ucsd_ped1[/UCSDped1]`` are tried).

    Returns:
      The ``UCSDped1`` folder.

    Raises:
      FileNotFoundError: ``root`` is missing or holds no such folder.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"UCSD Ped1 root folder {root} does not exist; {_LAYOUT}")
    candidates = [
        root,
        root / "UCSDped1",
        root / "UCSD_Anomaly_Dataset.v1p2" / "UCSDped1",
        root / "ucsd_ped1" / "UCSDped1",
        root / "ucsd_ped1",
    ]
    for c in candidates:
        if (c / "Train").is_dir() or (c / "Test").is_dir():
            return c
    raise FileNotFoundError(
        f"no UCSDped1 folder with Train/ and Test/ found under {root} "
        f"(tried {', '.join(str(c) for c in candidates)}); {_LAYOUT}"
    )


def _frame_files(folder: pathlib.Path, suffixes: tuple[str, ...]) -> list[tuple[int, pathlib.Path]]:
    """(1-based frame number, path) of the frames in ``folder``, sorted by number."""
    frames = []
    for p in folder.iterdir():
        if not _is_visible_file(p) or p.suffix.lower() not in suffixes:
            continue
        if not p.stem.isdigit():
            raise ValueError(f"unexpected frame file name {p} (expected e.g. 001{suffixes[0]})")
        frames.append((int(p.stem), p))
    frames.sort()
    if not frames:
        raise ValueError(f"empty clip: no {'/'.join(suffixes)} frames in {folder}")
    numbers = [n for n, _ in frames]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"duplicate frame numbers in {folder}")
    return frames


def _scan_split(
    split_dir: pathlib.Path, kind: str
) -> tuple[list[tuple[int, pathlib.Path]], dict[int, pathlib.Path]]:
    """Clip folders ``(number, path)`` (sorted) and ``TestNNN_gt`` mask folders by number.

    Only the official spellings are accepted; a folder whose name would also read as a clip
    or mask folder (``Test1``, ``test001``, ``Test0001_gt``) raises, naming it and, when it
    collides with an official folder, that one.
    """
    if not split_dir.is_dir():
        raise FileNotFoundError(f"missing folder {split_dir}; {_LAYOUT}")
    clips: dict[int, pathlib.Path] = {}
    gts: dict[int, pathlib.Path] = {}
    loose: list[tuple[pathlib.Path, int, bool]] = []
    for p in sorted(split_dir.iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        if m := _CLIP_RE[kind].match(p.name):
            clips[int(m.group(1))] = p
        elif kind == "Test" and (m := _GT_DIR_RE.match(p.name)):
            gts[int(m.group(1))] = p
        elif m := _LOOSE_DIR_RE[kind].match(p.name):
            loose.append((p, int(m.group(1)), bool(m.group(2))))
    for p, num, is_gt in loose:
        official = f"{kind}{num:03d}" + ("_gt" if is_gt else "")
        twin = (gts if is_gt else clips).get(num)
        clash = f"; it would be a second {official} beside {twin}" if twin is not None else ""
        raise ValueError(
            f"ambiguous folder name {p}: UCSD Ped1 folder names have three digits "
            f"(TrainNNN, TestNNN, TestNNN_gt), so this would be {official!r}{clash}; rename "
            f"or remove it. {_LAYOUT}"
        )
    if not clips:
        raise ValueError(f"empty split: no {kind}NNN clip folders in {split_dir}; {_LAYOUT}")
    return sorted(clips.items()), gts


def data_files(
    root: str | os.PathLike[str], *, pixel_gt_only: bool = True
) -> dict[str, list[pathlib.Path]]:
    """Exactly the files :func:`load_train` and :func:`load_test` read, for a data identity.

    Used by :func:`vae_xai.workdir.fingerprint_files`: stray files, notes, another ``.m`` file
    or, with ``pixel_gt_only``, the clips without masks are not part of it.

    Args:
      root: as for :func:`resolve_ped1_dir`.
      pixel_gt_only: as for the loaders: only the test clips with pixel masks.

    Returns:
      ``{"Train": frames, "Test": [UCSDped1.m (when present), frames, masks]}``, each sorted.

    Raises:
      FileNotFoundError, ValueError: as the loaders do for a layout they refuse.
    """
    ped1 = resolve_ped1_dir(root)
    train = [
        path
        for _, clip_dir in _scan_split(ped1 / "Train", "Train")[0]
        for _, path in _frame_files(clip_dir, (".tif", ".tiff"))
    ]
    test_dir = ped1 / "Test"
    clips, gt_dirs = _scan_split(test_dir, "Test")
    if pixel_gt_only:
        clips = [(num, d) for num, d in clips if num in gt_dirs]
    test = [test_dir / GT_FILE_NAME] if (test_dir / GT_FILE_NAME).is_file() else []
    for num, clip_dir in clips:
        test += [p for _, p in _frame_files(clip_dir, (".tif", ".tiff"))]
        if num in gt_dirs:
            test += [p for _, p in _frame_files(gt_dirs[num], (".bmp", ".png", ".tif", ".tiff"))]
    return {"Train": sorted(train), "Test": sorted(test)}


# ----------------------------------------------------------------------------- decoding


Job = tuple[pathlib.Path, pathlib.Path | None, bool]  # frame, mask, frame labelled anomalous


def _decode_frames(
    jobs: Sequence[Job],
    size_hw: tuple[int, int],
    num_workers: int | None,
    progress: bool,
    desc: str,
    *,
    check_frame_size: bool = True,
    allow_empty_masks: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Decode (frame, optional mask, label) jobs to uint8 ``(N, H, W)`` frames and masks."""
    n = len(jobs)
    frames = np.empty((n, *size_hw), dtype=np.uint8)
    masks = np.zeros((n, *size_hw), dtype=np.uint8)

    def work(i: int) -> None:
        frame_path, mask_path, anomalous = jobs[i]
        im = _read_image(frame_path)
        if check_frame_size and im.size != FRAME_SIZE_WH:
            raise ValueError(
                f"frame {frame_path} is {im.size[0]}x{im.size[1]} (WxH); UCSD Ped1 frames are "
                f"{FRAME_SIZE_WH[0]}x{FRAME_SIZE_WH[1]}. Pass check_frame_size=False to load "
                f"frames of another size (they are resized to image_size={size_hw})"
            )
        frames[i] = resize_image(im.convert("L"), size_hw)
        if mask_path is not None:
            m = _read_image(mask_path)
            if m.size != im.size:
                raise ValueError(
                    f"size mismatch: frame {frame_path} is {im.size[0]}x{im.size[1]} (WxH) but "
                    f"its mask {mask_path} is {m.size[0]}x{m.size[1]}"
                )
            binary = mask_foreground(m, mask_path)
            if anomalous and not allow_empty_masks and not binary.any():
                raise ValueError(
                    f"frame {frame_path} is anomalous in {GT_FILE_NAME} but its mask "
                    f"{mask_path} is empty (all 0); fix the mask, or pass "
                    "allow_empty_masks=True to load it as an anomalous frame without "
                    "anomalous pixels"
                )
            masks[i] = resize_binary_mask(binary, size_hw)

    run_indexed(work, n, num_workers=num_workers, progress=progress, desc=desc, unit="frame")
    return frames, masks


# ----------------------------------------------------------------------------- public API


def load_train(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] = (100, 100),
    num_workers: int | None = None,
    progress: bool = False,
    check_frame_size: bool = True,
) -> dict[str, np.ndarray]:
    """Load every training frame (all normal) of UCSD Ped1.

    Args:
      root: see :func:`resolve_ped1_dir`.
      image_size: ``(H, W)`` (or an int for square) output size; the paper uses 100x100.
      num_workers: decoding threads (default ``min(8, cpu_count)``).
      progress: show a tqdm progress bar.
      check_frame_size: require the official 238x158 frames (a ``ValueError`` names the
        first frame of another size); ``False`` resizes any size.

    Returns:
      dict with N frames (clips in order, frames in order):
        ``image``: float32 ``(N, H, W, 1)`` in [0, 1];
        ``label``: int32 ``(N,)`` all 0;
        ``clip``: str ``(N,)`` clip name, e.g. ``"Train001"``;
        ``frame``: int32 ``(N,)`` 1-based frame number within the clip.
    """
    size_hw = _size_hw(image_size)
    ped1 = resolve_ped1_dir(root)
    jobs: list[Job] = []
    clip_names: list[str] = []
    frame_nums: list[int] = []
    clips, _ = _scan_split(ped1 / "Train", "Train")
    for _, clip_dir in clips:
        for num, path in _frame_files(clip_dir, (".tif", ".tiff")):
            jobs.append((path, None, False))
            clip_names.append(clip_dir.name)
            frame_nums.append(num)
    frames, _ = _decode_frames(
        jobs, size_hw, num_workers, progress, "UCSDped1/Train", check_frame_size=check_frame_size
    )
    return {
        "image": frames[..., None].astype(np.float32) / np.float32(255.0),
        "label": np.zeros(len(jobs), dtype=np.int32),
        "clip": np.asarray(clip_names, dtype=str),
        "frame": np.asarray(frame_nums, dtype=np.int32),
    }


def load_test(
    root: str | os.PathLike[str],
    *,
    image_size: int | tuple[int, int] = (100, 100),
    pixel_gt_only: bool = True,
    num_workers: int | None = None,
    progress: bool = False,
    check_frame_size: bool = True,
    allow_empty_masks: bool = False,
) -> dict[str, np.ndarray]:
    """Load test frames with frame labels (from ``UCSDped1.m``) and pixel masks.

    Args:
      root: see :func:`resolve_ped1_dir`.
      image_size: ``(H, W)`` (or an int for square) output size.
      pixel_gt_only: keep only clips that have a ``TestNNN_gt`` mask folder (for pixel-level
        localization); ``False`` loads all clips, with all-zero masks and
        ``has_mask=False`` for clips without one.
      num_workers: decoding threads.
      progress: show a tqdm progress bar.
      check_frame_size: require the official 238x158 frames (see :func:`load_train`).
      allow_empty_masks: load a frame that ``UCSDped1.m`` marks anomalous even if its
        pixel mask is empty (by default that is an error naming the files).

    Returns:
      dict with N frames (clips in order, frames in order):
        ``image``: float32 ``(N, H, W, 1)`` in [0, 1];
        ``mask``: uint8 ``(N, H, W)`` in {0, 1};
        ``label``: int32 ``(N,)`` frame-level label, 1 anomalous (from ``UCSDped1.m``);
        ``has_mask``: bool ``(N,)`` whether the frame's clip has pixel annotations;
        ``clip``: str ``(N,)`` clip name, e.g. ``"Test003"``;
        ``frame``: int32 ``(N,)`` 1-based frame number within the clip.

    Raises:
      FileNotFoundError: missing ``Test/`` folder or ``UCSDped1.m`` (another ``.m`` file,
        e.g. Ped2's ``UCSDped2.m``, is never used in its place).
      ValueError: a clip or mask folder not spelled as in the release (``Test1``), a clip
        without a ``.m`` entry, anomalous frame numbers beyond the clip, a ``_gt`` folder
        whose frames do not match its clip (count or numbers), a ``_gt`` folder without its
        clip, no ``_gt`` folders with ``pixel_gt_only``, a frame that is not 238x158, a
        mask that is not binary, an empty mask on an anomalous frame.
      CorruptFileError: unreadable frame or mask file.
    """
    size_hw = _size_hw(image_size)
    ped1 = resolve_ped1_dir(root)
    test_dir = ped1 / "Test"
    clips, gt_dirs = _scan_split(test_dir, "Test")
    gt_path = test_dir / GT_FILE_NAME
    if not gt_path.is_file():
        others = sorted(p.name for p in test_dir.glob("*.m") if _is_visible_file(p))
        note = f"; found {others}, not used in its place" if others else ""
        if "UCSDped2.m" in others:
            note += " (UCSDped2.m holds UCSD Ped2's labels)"
        raise FileNotFoundError(f"missing frame-level ground truth file {gt_path}{note}; {_LAYOUT}")
    anomalous = parse_frame_gt_file(gt_path)

    clip_numbers = {num for num, _ in clips}
    orphans = sorted(str(p) for k, p in gt_dirs.items() if k not in clip_numbers)
    if orphans:
        raise ValueError(f"mask folder(s) without a matching test clip folder: {orphans}")
    if pixel_gt_only:
        clips = [(num, d) for num, d in clips if num in gt_dirs]
        if not clips:
            raise ValueError(
                f"no TestNNN_gt pixel-mask folders in {test_dir} (pixel_gt_only=True); {_LAYOUT}"
            )

    jobs: list[Job] = []
    labels: list[np.ndarray] = []
    clip_names: list[str] = []
    frame_nums: list[int] = []
    has_mask: list[bool] = []
    for num, clip_dir in clips:
        frames = _frame_files(clip_dir, (".tif", ".tiff"))
        numbers = [n for n, _ in frames]
        if num not in anomalous:
            raise ValueError(
                f"{gt_path} has no 'TestDataset{{{num}}}.gt_frame' entry for {clip_dir}"
            )
        bad = anomalous[num][~np.isin(anomalous[num], numbers)]
        if bad.size:
            raise ValueError(
                f"{gt_path}: TestDataset{{{num}}} marks frames {bad.tolist()} that {clip_dir} "
                f"does not have ({len(numbers)} frames)"
            )
        mask_paths: list[pathlib.Path | None] = [None] * len(frames)
        if num in gt_dirs:
            gt_frames = _frame_files(gt_dirs[num], (".bmp", ".png", ".tif", ".tiff"))
            if [n for n, _ in gt_frames] != numbers:
                raise ValueError(
                    f"mask folder {gt_dirs[num]} has {len(gt_frames)} frames but clip "
                    f"{clip_dir} has {len(frames)} (frame numbers must match one to one)"
                )
            mask_paths = [p for _, p in gt_frames]
        clip_labels = frame_labels(anomalous[num], numbers)
        for (n, path), mpath, lab in zip(frames, mask_paths, clip_labels, strict=True):
            jobs.append((path, mpath, bool(lab)))
            clip_names.append(clip_dir.name)
            frame_nums.append(n)
            has_mask.append(mpath is not None)
        labels.append(clip_labels)

    frames_u8, masks = _decode_frames(
        jobs,
        size_hw,
        num_workers,
        progress,
        "UCSDped1/Test",
        check_frame_size=check_frame_size,
        allow_empty_masks=allow_empty_masks,
    )
    return {
        "image": frames_u8[..., None].astype(np.float32) / np.float32(255.0),
        "mask": masks,
        "label": np.concatenate(labels).astype(np.int32),
        "has_mask": np.asarray(has_mask, dtype=bool),
        "clip": np.asarray(clip_names, dtype=str),
        "frame": np.asarray(frame_nums, dtype=np.int32),
    }
