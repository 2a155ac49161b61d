"""The identity of the dSprites renderer, recorded as the data identity of runs trained on
rendered dSprites (:mod:`vae_xai.experiments.quickstart`,
:mod:`vae_xai.experiments.dsprites_disentanglement`; ``run.json``'s ``data``).

Training data rendered on the fly has no files to fingerprint
(:func:`vae_xai.workdir.fingerprint_files`); what identifies it is what the renderer draws. A
resumed run whose renderer draws differently is refused by :func:`vae_xai.workdir.start`, so
the value must not change for an unchanged renderer.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np

from data_pipelines import dsprites

__all__ = ["renderer_identity"]


def renderer_identity() -> dict[str, Any]:
    """The identity of the dSprites renderer: a hash of 64 fixed renders (on the CPU).

    Rendering on the CPU keeps the hash the same when a run continues on an accelerator.
    Costs a fraction of a second.
    """
    grid = np.meshgrid(*(np.arange(0, n, max(1, n // 3)) for n in (3, 6, 40, 32, 32)))
    classes = np.stack([g.ravel() for g in grid], -1)[:64]
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
        images = np.asarray(dsprites.render_from_classes(classes), np.uint8)
    return {
        "renderer": "data_pipelines.dsprites.render_from_classes",
        "sha256_of_64_renders": hashlib.sha256(images.tobytes()).hexdigest(),
    }
