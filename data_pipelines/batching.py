"""Epoch batching over in-memory arrays: one deterministic ``step -> batch`` function.

Every data pipeline that holds its examples in memory (MNIST, MVTec-AD, UCSD Ped1, the
one-class launchers) batches through :func:`epoch_batch_fn`, so resuming a run at step ``s``
replays exactly the batches of an uninterrupted run (:func:`vae_xai.train.fit` calls
``batch_fn(step)``; nothing depends on how many batches were drawn before).

Epoch ``e`` (steps ``e * steps_per_epoch`` ... ) visits the permutation
``np.random.default_rng([seed, e]).permutation(N)``, sliced into consecutive batches; the
incomplete last batch is dropped by default. (dSprites needs none of this: its batches are
rendered on device from ``fold_in(key, step)``, :func:`data_pipelines.dsprites_gt.make_batch_fn`.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np

__all__ = ["epoch_batch_fn", "iterate_epochs", "num_examples", "steps_per_epoch"]

Data = TypeVar("Data", np.ndarray, Mapping[str, np.ndarray])


def num_examples(data: np.ndarray | Mapping[str, Any]) -> int:
    """The shared leading dimension ``N`` of an array or a dict of arrays.

    Args:
      data: an array, or a dict of arrays.

    Returns:
      ``N``.

    Raises:
      ValueError: an empty dict, or arrays of different leading dimensions.
    """
    if isinstance(data, Mapping):
        lengths = {k: len(v) for k, v in data.items()}
        if not lengths:
            raise ValueError("data is empty: no arrays to batch")
        n = next(iter(lengths.values()))
        if any(v != n for v in lengths.values()):
            raise ValueError(f"arrays have different leading dimensions: {lengths}")
        return n
    return len(data)


def steps_per_epoch(n: int, batch_size: int, *, drop_remainder: bool = True) -> int:
    """Batches in one pass over ``n`` examples.

    Args:
      n: number of examples.
      batch_size: examples per batch.
      drop_remainder: whether the last, partial batch is dropped (else it is counted).

    Returns:
      The number of batches per epoch.

    Raises:
      ValueError: ``n == 0``, or ``batch_size`` not in ``1..n`` (any positive size when
        ``drop_remainder=False``), naming the number of examples.
    """
    if n <= 0:
        raise ValueError("no examples to batch (N=0): the selected data is empty")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if drop_remainder:
        if batch_size > n:
            raise ValueError(
                f"batch_size must be in 1..{n} (the number of examples); got {batch_size}: "
                f"batch_size={batch_size} exceeds the {n} examples"
            )
        return n // batch_size
    return -(-n // batch_size)


def epoch_batch_fn(
    data: Data,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    sort_within_batch: bool = False,
) -> Callable[[int], Data]:
    """``step -> batch``: a deterministic function of the step, over whole arrays.

    Args:
      data: an ``(N, ...)`` array, or a dict of arrays sharing ``N`` (sliced together).
      batch_size: examples per batch ``B``, in ``1..N``.
      seed: the permutation of epoch ``e`` is ``np.random.default_rng([seed, e])``.
      shuffle: permute each epoch (else the stored order, every epoch).
      drop_remainder: drop the last incomplete batch of each epoch (every batch is ``B``).
      sort_within_batch: return a batch's examples in index order instead of permutation
        order (the same examples; :mod:`vae_xai.localization` batches this way and
        :mod:`data_pipelines.mnist` does not, which fixes each pipeline's exact batches).

    Returns:
      ``batch_fn(step)`` with the type of ``data``: an array ``(B, ...)`` or a dict of them.
      ``batch_fn(step, rows=slice)`` is ``batch_fn(step)[rows]`` with only those rows
      gathered, and ``batch_fn.global_batch_size == B``: under several processes
      (:mod:`vae_xai.distributed`) each process reads only its rows of every batch.
    """
    n = num_examples(data)
    per_epoch = steps_per_epoch(n, batch_size, drop_remainder=drop_remainder)

    @functools.lru_cache(maxsize=2)
    def order(epoch: int) -> np.ndarray:
        if not shuffle:
            return np.arange(n)
        return np.random.default_rng([seed, epoch]).permutation(n)

    def batch_fn(step: int, rows: slice | None = None) -> Data:
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0; got {step}")
        epoch, i = divmod(step, per_epoch)
        idx = order(epoch)[i * batch_size : (i + 1) * batch_size]
        if sort_within_batch:
            idx = np.sort(idx)
        if rows is not None:  # one process's rows: only those examples are gathered
            idx = idx[rows]
        if isinstance(data, Mapping):
            return {k: v[idx] for k, v in data.items()}
        return data[idx]

    # vae_xai.train.fit asks a batch_fn with this attribute for one process's rows only
    batch_fn.global_batch_size = batch_size  # type: ignore[attr-defined]
    return batch_fn


def iterate_epochs(
    data: Data,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    epochs: int | None = 1,
    drop_remainder: bool = True,
) -> Iterator[Data]:
    """The batches of :func:`epoch_batch_fn` in step order.

    Args:
      data: as for :func:`epoch_batch_fn`.
      batch_size: as for :func:`epoch_batch_fn`.
      seed: as for :func:`epoch_batch_fn`.
      shuffle: as for :func:`epoch_batch_fn`.
      epochs: number of passes over the data; ``None``: forever.
      drop_remainder: as for :func:`epoch_batch_fn`.

    Yields:
      Batches, an array ``(B, ...)`` or a dict of them.
    """
    batch_fn = epoch_batch_fn(
        data, batch_size, seed=seed, shuffle=shuffle, drop_remainder=drop_remainder
    )
    per_epoch = steps_per_epoch(num_examples(data), batch_size, drop_remainder=drop_remainder)
    step = 0
    while epochs is None or step < epochs * per_epoch:
        yield batch_fn(step)
        step += 1
