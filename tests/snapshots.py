"""``snapshot(folder)``: what a refused start must leave unchanged in a workdir."""

from __future__ import annotations

import hashlib
import os
import pathlib

from vae_xai.workdir import LOCK_FILE


def snapshot(folder: pathlib.Path) -> dict[str, str]:
    """Every file (and link) under ``folder``: relative path -> content hash or link target.
    (Not the lock file: a refused start takes the free lock, recording its holder, first.)"""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            if name == LOCK_FILE:
                continue
            path = pathlib.Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
