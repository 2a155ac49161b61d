"""What the one-class experiments (MNIST localization control, MVTec-AD, UCSD Ped1) share
beyond :func:`vae_xai.localization.train_and_evaluate`: their training batches, which come
from :mod:`data_pipelines` (the core takes them as an argument, ``epoch_batches``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_pipelines import batching

__all__ = ["epoch_batch_fn"]


def epoch_batch_fn(
    images: np.ndarray, batch_size: int, *, seed: int = 0
) -> Callable[[int], dict[str, np.ndarray]]:
    """``step -> {"image": (batch_size, H, W, C)}``, a deterministic function of ``step``.

    :func:`data_pipelines.batching.epoch_batch_fn` with each batch in index order (how the
    one-class launchers have always batched): epoch ``e`` visits the permutation of
    ``default_rng([seed, e])``; incomplete last batches are dropped.
    """
    return batching.epoch_batch_fn({"image": images}, batch_size, seed=seed, sort_within_batch=True)
