"""Score a representation from a table of every factor combination, encoded once.

The FactorVAE and beta-VAE scores at disentanglement_lib's sizes encode about 0.97 and 1.9
million images (``(num_train + num_eval) * batch_size`` draws, twice for beta-VAE's pairs),
but dSprites holds only 737,280 distinct images: one per factor combination. Where the
observations are a deterministic function of the factors (they ignore ``rng``, as in
dSprites, Shapes3D, MPI3D), encoding each combination once and looking the draws up is
cheaper from about 740k draws on, and scores the same: the metrics draw the same factors
from the same ``rng``, and each row of the table is what ``representation_fn`` returns for
that image.

:func:`tabulate` builds the table and returns a ground truth whose "observations" are row
numbers together with the representation that reads the table; pass both to
:func:`~vae_xai.metrics.disentanglement.factor_vae_score`, :func:`beta_vae_score` or
:func:`mig` in place of the originals::

    table_gt, table_fn = tabulate(gt, representation_fn, batch_size=64)
    factor_vae_score(table_gt, table_fn, rng)

Equality with direct scoring: on this CPU, a jitted encoder's output for an image does not
depend on the other images of a batch of the same size (checked, bit for bit, for the dSprites
VAE), but a batch of another size may round differently in the last bit (2e-8 for 16 images
instead of 64). So the table is built in the metric's own batch size (its last batch padded to
it), and a call of another size (a metric's last partial batch, e.g. the 16 images that end
FactorVAE's 10,000-image variance estimate) is encoded directly, as the metric would. Where
the encoder has that property, the representations equal direct scoring's and so do the
scores; ``benchmarks/dsprites_tabulated.py`` compares both at the standard sizes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vae_xai.metrics.disentanglement.ground_truth import (
    GroundTruthData,
    RepresentationFn,
    _check_positive_int,
    _maybe_tqdm,
    _num_factors,
    check_factor_classes,
)

__all__ = ["TabulatedGroundTruth", "num_combinations", "planned_encodings", "tabulate"]

# Above this many rows the table would not pay for itself on any metric at standard sizes,
# and would take gigabytes for a wide representation: refused with a clear error.
MAX_ROWS = 50_000_000


def num_combinations(gt: GroundTruthData) -> int:
    """The number of factor combinations of ``gt`` (the product of its factor sizes).

    Args:
      gt: the ground-truth data.

    Returns:
      The product of ``gt.factor_sizes``.

    Raises:
      ValueError: ``gt`` has no factors or a factor size below 1.
    """
    _num_factors(gt)  # the metrics' own check of the sizes
    return math.prod(int(s) for s in gt.factor_sizes)


def planned_encodings(metric: str, settings: dict[str, Any]) -> int:
    """How many images a metric encodes at ``settings`` (its keyword arguments).

    Args:
      metric: ``"factor_vae"``, ``"beta_vae"`` or ``"mig"``.
      settings: the metric's ``batch_size``, ``num_train``, ``num_eval`` and (FactorVAE)
        ``num_variance_estimate``.

    Returns:
      The number of ``representation_fn`` rows the metric asks for.

    Raises:
      ValueError: an unknown metric.
    """
    s = dict(settings)
    if metric == "factor_vae":
        return s["num_variance_estimate"] + (s["num_train"] + s["num_eval"]) * s["batch_size"]
    if metric == "beta_vae":
        return 2 * (s["num_train"] + s["num_eval"]) * s["batch_size"]
    if metric == "mig":
        return s["num_train"]
    raise ValueError(f"unknown metric {metric!r}; choose from factor_vae, beta_vae, mig")


class TabulatedGroundTruth:
    """``gt`` with row numbers as observations: ``sample_observations_from_factors`` returns
    the flat index of each factor combination (C order over ``factor_sizes``).

    Attributes:
      gt: the ground truth it stands for.
      factor_sizes: ``gt.factor_sizes``.
      factor_names: ``gt.factor_names`` where it has them.
      table: ``(num_combinations, D)`` in the encoder's dtype, row ``i`` the representation of
        combination ``i``.
      batch_size: the batch size the table was encoded in; :meth:`representation_fn` encodes
        calls of another size directly with ``encoder``.
      encoder: the original representation function (``None``: every call reads the table).
    """

    def __init__(
        self,
        gt: GroundTruthData,
        table: np.ndarray,
        *,
        batch_size: int | None = None,
        encoder: RepresentationFn | None = None,
    ) -> None:
        self.gt = gt
        self.batch_size = batch_size
        self.encoder = encoder
        self.factor_sizes = tuple(int(s) for s in gt.factor_sizes)
        self.factor_names = tuple(getattr(gt, "factor_names", ()))
        if table.ndim != 2 or table.shape[0] != num_combinations(gt):
            raise ValueError(
                f"table must be (num_combinations, D) = ({num_combinations(gt)}, D); "
                f"got {table.shape}"
            )
        self.table = table

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """``gt.sample_factors`` (the same draws from the same ``rng``)."""
        return self.gt.sample_factors(num, rng)

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """The table rows of ``factors`` (``rng`` unused, as in ``gt``).

        Args:
          factors: ``(num, F)`` integer factor classes.
          rng: unused.

        Returns:
          ``(num,)`` int64 row numbers.

        Raises:
          ValueError: wrong shape or classes out of range.
          TypeError: non-integer classes.
        """
        del rng
        f = check_factor_classes(factors, self.factor_sizes, self.factor_names)
        return np.ravel_multi_index(tuple(f.T), self.factor_sizes).astype(np.int64)

    def representation_fn(self, rows: np.ndarray) -> np.ndarray:
        """The representations of table rows (what :func:`tabulate` returns as ``table_fn``).

        A call of another size than the table's batch size is encoded directly (the same
        images, through ``encoder``), so that it rounds as direct scoring's call would.

        Args:
          rows: ``(num,)`` row numbers from :meth:`sample_observations_from_factors`.

        Returns:
          ``(num, D)``.

        Raises:
          TypeError: ``rows`` are not 1-D integer row numbers (e.g. images: the table's
            representation was paired with the original ground truth).
        """
        r = np.asarray(rows)
        if r.ndim != 1 or r.dtype.kind not in "iu":
            raise TypeError(
                f"the table's representation takes 1-D integer row numbers; got {r.dtype} of "
                f"shape {r.shape}: pass the table's ground truth and representation together "
                "(tabulate returns both)"
            )
        if self.encoder is not None and self.batch_size is not None and len(r) != self.batch_size:
            factors = np.stack(np.unravel_index(r, self.factor_sizes), axis=1).astype(np.int64)
            return np.asarray(self.encoder(self.gt.sample_observations_from_factors(factors, None)))
        return self.table[r]


def tabulate(
    gt: GroundTruthData,
    representation_fn: RepresentationFn,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[TabulatedGroundTruth, RepresentationFn]:
    """Encode every factor combination of ``gt`` once, in batches of ``batch_size``.

    Only for ground truth whose observations are a function of the factors alone (its
    ``sample_observations_from_factors`` ignores ``rng``); with noisy observations the table
    would freeze one draw per combination.

    Args:
      gt: the ground-truth data (``factor_sizes``, ``sample_observations_from_factors``).
      representation_fn: ``observations -> (n, D)``, e.g. the encoder means.
      batch_size: images per ``representation_fn`` call (the last batch padded to it); use
        the metric's own (see the module docstring). The returned representation encodes
        calls of another size directly.
      progress: show a progress bar.

    Returns:
      ``(table_gt, table_fn)``: use them in place of ``(gt, representation_fn)``.

    Raises:
      ValueError: ``batch_size`` not a positive integer, more than :data:`MAX_ROWS`
        combinations, or a ``representation_fn`` output of the wrong shape or non-finite
        (naming the rows).
    """
    _check_positive_int("batch_size", batch_size)
    total = num_combinations(gt)
    if total > MAX_ROWS:
        raise ValueError(
            f"{total:,} factor combinations: too many to tabulate (at most {MAX_ROWS:,}); "
            "score with the representation directly"
        )
    sizes = tuple(int(s) for s in gt.factor_sizes)
    table: np.ndarray | None = None
    starts = range(0, total, batch_size)
    for start in _maybe_tqdm(starts, progress, "encoding every factor combination", len(starts)):
        rows = np.arange(start, min(start + batch_size, total))
        n = len(rows)
        padded = np.concatenate([rows, np.full(batch_size - n, rows[-1])])  # one batch size
        factors = np.stack(np.unravel_index(padded, sizes), axis=1).astype(np.int64)
        obs = gt.sample_observations_from_factors(factors, None)
        reps = np.asarray(representation_fn(obs))
        if reps.ndim != 2 or reps.shape[0] != batch_size:
            raise ValueError(
                f"representation_fn must return (n, D) = ({batch_size}, D); got {reps.shape}"
            )
        reps = reps[:n]
        if not np.all(np.isfinite(reps)):
            raise ValueError(
                f"representation_fn returned non-finite values for rows {start}-"
                f"{start + n - 1} (factors {factors[0].tolist()} ...); direct scoring may "
                "not draw them (eval.tabulate=never in the dSprites experiment)"
            )
        if table is None:
            table = np.empty((total, reps.shape[1]), reps.dtype)
        elif reps.shape[1] != table.shape[1]:
            raise ValueError(
                f"representation_fn returned {reps.shape[1]} dimensions, earlier calls "
                f"returned {table.shape[1]}"
            )
        table[start : start + n] = reps
    assert table is not None
    table_gt = TabulatedGroundTruth(gt, table, batch_size=batch_size, encoder=representation_fn)
    return table_gt, table_gt.representation_fn
