"""How an output file was made, and how it is written: the time, the git commit, the package
versions and the device (:func:`provenance`), and :func:`write_json_atomic`.

Used by run records (:mod:`vae_xai.workdir`, which re-exports both) and the results schema
(:mod:`vae_xai.results`); a leaf module, so neither has to import the other for them.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import subprocess
from typing import Any

import jax

import vae_xai

__all__ = ["device", "git_commit", "now", "provenance", "versions", "write_json_atomic"]


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> pathlib.Path:
    """Write ``obj`` as JSON to ``path`` via a temporary file and ``os.replace``.

    A reader (or a crash) sees the old file or the new one, never half of one. With several
    processes (:mod:`vae_xai.distributed`) only process 0 writes.

    Args:
      path: the file; its folder is created if missing.
      obj: the value; what JSON cannot hold is written with ``str``.

    Returns:
      ``path`` (unwritten on processes other than 0).
    """
    path = pathlib.Path(path)
    if jax.process_count() > 1 and jax.process_index() != 0:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(json.dumps(obj, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def git_commit() -> dict[str, Any]:
    """``{"commit", "dirty"}`` of this checkout (``{"commit": None}`` outside one)."""
    repo = pathlib.Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode != 0:
            return {"commit": None}
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def versions() -> dict[str, Any]:
    """The versions of vae_xai and the packages its numbers depend on."""
    out: dict[str, Any] = {"vae_xai": vae_xai.__version__}
    for name in ("jax", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device() -> dict[str, Any]:
    """The platform, device kind and count, and the number of processes."""
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "process_count": jax.process_count(),
    }


def provenance() -> dict[str, Any]:
    """What an output file should say about how it was made.

    For tools that write one file rather than a run.

    Returns:
      ``{"time", "git", "versions", "device"}`` (see :func:`now`, :func:`git_commit`,
      :func:`versions`, :func:`device`).
    """
    return {"time": now(), "git": git_commit(), "versions": versions(), "device": device()}
