"""What the disentanglement metrics need from a dataset, and how they draw representations.

A dataset only has to satisfy the small :class:`GroundTruthData` protocol (factor sizes,
factor sampling, rendering observations from factors); the metrics never import a dataset
module. The representation is any callable ``representation_fn(observations) -> (num, D)``;
its output is validated (shape, constant ``D``, finite values) before any metric uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

RepresentationFn = Callable[[Any], Any]
"""Maps a batch of observations (leading axis ``num``) to an array-like ``(num, D)``."""


@runtime_checkable
class GroundTruthData(Protocol):
    """A dataset with discrete ground-truth factors of variation.

    Attributes:
      factor_sizes: number of classes of each factor, e.g. dSprites
        ``(3, 6, 40, 32, 32)`` for shape, scale, orientation, posX, posY.
    """

    factor_sizes: Sequence[int]

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """Sample random factor classes.

        Args:
          num: number of points.
          rng: the random generator to draw from.

        Returns:
          ``(num, F)`` integers, factor ``j`` in ``[0, factor_sizes[j])``.
        """
        ...

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Render observations from factor classes.

        Args:
          factors: ``(num, F)`` factor classes.
          rng: the random generator, for datasets whose rendering is random.

        Returns:
          A batch of ``num`` observations (leading axis ``num``).
        """
        ...


def _check_positive_int(name: str, value: int, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), "
            f"got {type(rng).__name__}"
        )


def _num_factors(gt: GroundTruthData) -> int:
    sizes = tuple(int(s) for s in gt.factor_sizes)
    if not sizes or min(sizes) < 1:
        raise ValueError(f"factor_sizes must be a non-empty sequence of sizes >= 1, got {sizes}")
    return len(sizes)


def check_factor_classes(
    factors: Any, factor_sizes: Sequence[int], names: Sequence[str] = ()
) -> np.ndarray:
    """Check ``(num, F)`` integer factor classes against the factor sizes (for a ground
    truth's ``sample_observations_from_factors``).

    Args:
      factors: the classes.
      factor_sizes: each factor's number of classes.
      names: the factor names, for the message (optional).

    Returns:
      ``factors`` as a NumPy array.

    Raises:
      ValueError: not ``(num, F)``, or a class out of range.
      TypeError: non-integer classes.
    """
    f = np.asarray(factors)
    if f.ndim != 2 or f.shape[1] != len(factor_sizes):
        of = f" of {tuple(names)}" if names else ""
        raise ValueError(
            f"factors must be (num, {len(factor_sizes)}) classes{of}; got shape {f.shape}"
        )
    if f.dtype.kind not in "iu":
        raise TypeError(f"factors must be integer classes; got dtype {f.dtype}")
    bad = (f < 0) | (f >= np.asarray(factor_sizes))
    if f.size and bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        which = names[col] if col < len(names) else f"factor {col}"
        raise ValueError(
            f"factor classes out of range: {which} = {int(f[row, col])} in row {row} (its "
            f"classes are 0..{int(factor_sizes[col]) - 1}); sizes are {tuple(factor_sizes)}"
        )
    return f


def _sample_factors(gt: GroundTruthData, num: int, rng: np.random.Generator) -> np.ndarray:
    """Calls ``gt.sample_factors`` and checks it returned ``(num, F)``."""
    factors = np.asarray(gt.sample_factors(num, rng))
    expected = (num, _num_factors(gt))
    if factors.shape != expected:
        raise ValueError(
            f"sample_factors({num}) returned shape {factors.shape}, expected {expected}"
        )
    return factors.copy()  # we may write into it (fixing a factor)


def _represent(
    representation_fn: RepresentationFn, observations: Any, num: int, dim: int | None = None
) -> np.ndarray:
    """Calls ``representation_fn`` and validates its ``(num, D)`` finite output (as float64).

    Args:
      representation_fn: the representation under test.
      observations: a batch of ``num`` observations.
      num: expected leading dimension.
      dim: expected representation size ``D`` if already known (must stay constant).
    """
    reps = np.asarray(representation_fn(observations), dtype=np.float64)
    if reps.ndim != 2 or reps.shape[0] != num:
        raise ValueError(
            f"representation_fn must return an array of shape (num, D) = ({num}, D), "
            f"got shape {reps.shape}"
        )
    if dim is not None and reps.shape[1] != dim:
        raise ValueError(
            f"representation_fn returned {reps.shape[1]} dimensions, earlier calls returned {dim}"
        )
    if reps.shape[1] == 0:
        raise ValueError("representation_fn returned a representation with 0 dimensions")
    if not np.all(np.isfinite(reps)):
        n_nan = int(np.isnan(reps).sum())
        n_inf = int(np.isinf(reps).sum())
        raise ValueError(
            f"representation_fn returned non-finite values (NaN: {n_nan}, inf: {n_inf}) "
            f"in a batch of shape {reps.shape}"
        )
    return reps


def _maybe_tqdm(iterable: Iterable[Any], progress: bool, desc: str, total: int) -> Iterable[Any]:
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total)


def compute_representations(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    num: int,
    rng: np.random.Generator,
    batch_size: int = 16,
    *,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Representations of ``num`` random points and the factors that generated them.

    Port of disentanglement_lib ``utils.generate_batch_factor_code``: for each batch of at
    most ``batch_size`` points, sample factors, render observations, represent them. The
    last batch is smaller when ``num`` is not a multiple of ``batch_size`` (a jitted
    ``representation_fn`` then compiles once more for that shape).

    Args:
      gt: the dataset.
      representation_fn: ``observations -> (n, D)``.
      num: number of points.
      rng: source of all randomness.
      batch_size: points per ``representation_fn`` call.
      progress: show a tqdm progress bar.

    Returns:
      ``(representations, factors)`` with shapes ``(num, D)`` float64 and ``(num, F)``,
      sample-major (the transpose of disentanglement_lib's ``(D, num)``, ``(F, num)``).

    Raises:
      ValueError: ``num``/``batch_size`` not positive integers, or a ``sample_factors`` /
        ``representation_fn`` output of the wrong shape, changing ``D`` or non-finite.
      TypeError: ``rng`` is not a ``numpy.random.Generator``.
    """
    _check_positive_int("num", num)
    _check_positive_int("batch_size", batch_size)
    _check_rng(rng)
    reps: list[np.ndarray] = []
    factors: list[np.ndarray] = []
    dim: int | None = None
    starts = range(0, num, batch_size)
    for start in _maybe_tqdm(starts, progress, "representations", len(starts)):
        n = min(batch_size, num - start)
        f = _sample_factors(gt, n, rng)
        obs = gt.sample_observations_from_factors(f, rng)
        r = _represent(representation_fn, obs, n, dim)
        dim = r.shape[1]
        reps.append(r)
        factors.append(f)
    return np.concatenate(reps, axis=0), np.concatenate(factors, axis=0)
