"""The data identity of a run: a fingerprint of its data files (:func:`fingerprint_files`).

A run's record (``run.json``) keeps the fingerprint without its per-file table, which goes to
``workdir/data_files.json`` (:func:`split_listings`), so that a later start whose data differ
can name the files that changed (:func:`changed_files`).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

__all__ = [
    "CONTENT_HASH_LIMIT",
    "DATA_FILES",
    "LISTING",
    "changed_files",
    "fingerprint_files",
    "split_listings",
]

# Above this many bytes the data fingerprint uses (size, mtime) instead of content hashes.
CONTENT_HASH_LIMIT = 2 << 30
# the key of a fingerprint's per-file table: stored in workdir/data_files.json, not run.json
LISTING = "_listing"
DATA_FILES = "data_files.json"


def _walk_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every visible file under ``root``, following symlinked folders and files (a data
    folder of links is read through them), each real folder once (no link cycles)."""
    out: list[pathlib.Path] = []
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            path = pathlib.Path(folder) / name
            if not name.startswith(".") and path.is_file():
                out.append(path)
    return sorted(out)


def fingerprint_files(
    root: str | os.PathLike[str],
    *,
    files: Sequence[str | os.PathLike[str]] | None = None,
    suffixes: Collection[str] | None = None,
    ignore: Collection[str] = (),
    content_limit: int = CONTENT_HASH_LIMIT,
) -> dict[str, Any]:
    """A fingerprint of the data files under ``root`` (or of ``files``, paths under it).

    ``sha256`` over the sorted relative paths with each file's size and content hash, so a
    copy of the same data elsewhere has the same fingerprint and any added, removed or
    changed file gives another. When the files hold more than ``content_limit`` bytes the
    file's modification time (ns) replaces its content hash (``"mode": "stat"``): hashing
    would no longer take seconds. Hidden files (``.name``) are skipped; symlinked folders
    and files are followed (the loader reads through them).

    Args:
      root: the data folder.
      files: exactly the files the loader reads (else every file under ``root``).
      suffixes: only files with one of these suffixes (case-insensitive, e.g. the image
        extensions a loader accepts), so files it never reads (``Thumbs.db``, notes) are
        not part of the identity.
      ignore: file names (case-insensitive) the loader skips.
      content_limit: see above.

    Returns:
      ``{"sha256", "num_files", "bytes", "mode", "_listing"}``; ``_listing`` (each file's
      token) is kept by :func:`vae_xai.workdir.start` in ``workdir/data_files.json`` to name
      the files that changed when a later start's data differ, and is not compared itself.
    """
    root = pathlib.Path(root)
    if files is None:
        if not root.is_dir():
            raise FileNotFoundError(f"data folder {root} does not exist")
        paths = _walk_files(root)
    else:
        paths = sorted(pathlib.Path(f) for f in files)
    if suffixes is not None:
        allowed = {x.lower() for x in suffixes}
        paths = [p for p in paths if p.suffix.lower() in allowed]
    skipped = {x.lower() for x in ignore}
    paths = [p for p in paths if p.name.lower() not in skipped]
    stats = [(p, p.stat()) for p in paths]
    total = sum(s.st_size for _, s in stats)
    mode = "content" if total <= content_limit else "stat"
    digest = hashlib.sha256()
    listing: dict[str, str] = {}
    for p, st in stats:
        rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
        if mode == "content":
            h = hashlib.sha256()
            with p.open("rb") as f:
                while chunk := f.read(1 << 22):
                    h.update(chunk)
            token = h.hexdigest()
        else:
            token = str(st.st_mtime_ns)
        digest.update(f"{rel}\0{st.st_size}\0{token}\n".encode())
        listing[rel] = f"{st.st_size}:{token[:16]}"
    return {
        "sha256": digest.hexdigest(),
        "num_files": len(stats),
        "bytes": total,
        "mode": mode,
        LISTING: listing,
    }


def split_listings(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` without the fingerprints' per-file tables, and those tables by dotted key.

    Args:
      data: a data identity (nested mappings, fingerprints among them).

    Returns:
      ``(data without "_listing" entries, {dotted key of the fingerprint: its table})``.
    """
    tables: dict[str, Any] = {}

    def strip(tree: Any, prefix: str) -> Any:
        if not isinstance(tree, Mapping):
            return tree
        out = {}
        for k, v in tree.items():
            if k == LISTING:
                tables[prefix.rstrip(".")] = v
            else:
                out[k] = strip(v, f"{prefix}{k}.")
        return out

    return strip(data, ""), tables


def changed_files(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``added X``, ``removed X``, ``changed X`` lines between two sets of per-file tables.

    Args:
      old: ``{dotted key of a fingerprint: per-file table}`` recorded
        (``workdir/data_files.json``).
      new: the same for this start (:func:`split_listings`).

    Returns:
      At most 20 lines (then a count of the rest).
    """
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key) or {}, new.get(key) or {}
        where = f"{key}: " if key else ""
        for rel in sorted(set(a) | set(b)):
            if rel not in a:
                lines.append(f"{where}added {rel}")
            elif rel not in b:
                lines.append(f"{where}removed {rel}")
            elif a[rel] != b[rel]:
                lines.append(f"{where}changed {rel}")
    return lines[:20] + ([f"... {len(lines) - 20} more"] if len(lines) > 20 else [])
