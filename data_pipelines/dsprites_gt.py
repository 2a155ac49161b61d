"""dSprites as ground-truth data for the disentanglement metrics, rendered on device.

:class:`DSpritesGroundTruth` satisfies :class:`vae_xai.metrics.disentanglement.GroundTruthData`
with the five factors that vary in dSprites -- shape (3), scale (6), orientation (40),
posX (32), posY (32); the constant colour is excluded, as in disentanglement_lib. Observations
come straight from :func:`data_pipelines.dsprites.render_from_classes`: every factor
combination maps to exactly one image, so no dataset file and no host data loading are
needed, and ``sample_observations_from_factors`` ignores its ``rng``.

:func:`make_batch_fn` gives training batches the same way: ``batch_fn(step)`` draws factor
classes uniformly (= a uniform draw over the 737,280 dSprites images) from
``fold_in(key(seed), step)`` and renders them in one jitted call, so it is deterministic in
``step`` (what :func:`vae_xai.train.fit` needs to resume exactly).

With the official release at hand, :meth:`DSpritesGroundTruth.from_official` scores the
metrics on the official images instead (each factor combination indexes its row of the
official array, as disentanglement_lib does); training can stay on the renderer.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import dsprites
from vae_xai.metrics.disentanglement.ground_truth import check_factor_classes

__all__ = ["DSpritesGroundTruth", "make_batch_fn"]


@jax.jit
def _render_nhwc(classes: jax.Array) -> jax.Array:
    return dsprites.render_from_classes(classes)[..., None]


class DSpritesGroundTruth:
    """dSprites factors -> images for the metrics, ``(num, 64, 64, 1)`` float32 in {0, 1}.

    Attributes:
      factor_names: ``("shape", "scale", "orientation", "posX", "posY")``.
      factor_sizes: ``(3, 6, 40, 32, 32)``.
      channel_axis: whether observations carry a trailing channel axis (the VAEs expect it).
      to_numpy: return NumPy instead of device arrays (device arrays avoid a host round trip
        when the representation function is a jitted JAX encoder).
    """

    factor_names: tuple[str, ...] = tuple(dsprites.FACTOR_NAMES)
    factor_sizes: tuple[int, ...] = tuple(dsprites.FACTOR_SIZES)

    def __init__(
        self,
        *,
        channel_axis: bool = True,
        to_numpy: bool = False,
        images: np.ndarray | None = None,
    ) -> None:
        """Set up the ground truth, rendered or backed by the official images.

        Args:
          channel_axis: add a trailing channel axis to observations.
          to_numpy: return NumPy instead of device arrays.
          images: the official image array ``(737280, 64, 64)`` in release order (row =
            :func:`data_pipelines.dsprites.flat_index` of the classes), or None to render.

        Raises:
          ValueError: ``images`` is not the full official array.
        """
        if images is not None:
            shape = tuple(getattr(images, "shape", ()))
            if shape != (dsprites.NUM_IMAGES, 64, 64):
                raise ValueError(
                    f"images must be the full official array of shape "
                    f"({dsprites.NUM_IMAGES}, 64, 64) in release order; got {shape}"
                )
        self.channel_axis = channel_axis
        self.to_numpy = to_numpy
        self.images = images

    @classmethod
    def from_official(cls, path: str, **kwargs) -> DSpritesGroundTruth:
        """Ground truth backed by the official release, validated to hold all 737,280 rows in order.

        Args:
          path: the official ``.npz``/``.hdf5`` file or its folder.
          **kwargs: ``channel_axis``/``to_numpy`` of the constructor.

        Returns:
          The ground truth, with ``source == "official"``.
        """
        data = dsprites.load_official(path, load_images=True, check_full=True)
        return cls(images=data.imgs, **kwargs)

    @property
    def source(self) -> str:
        """``"renderer"`` or ``"official"``: where observations come from."""
        return "renderer" if self.images is None else "official"

    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    def sample_factors(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """Sample factor classes, each factor uniform in ``[0, size)``.

        Args:
          num: number of rows (>= 0).
          rng: the random generator.

        Returns:
          ``(num, 5)`` int64.

        Raises:
          TypeError: ``rng`` is not a ``numpy.random.Generator``.
          ValueError: ``num`` is not a non-negative integer.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy Generator; got {type(rng).__name__}")
        if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 0:
            raise ValueError(f"num must be a non-negative int; got {num!r}")
        return rng.integers(0, np.asarray(self.factor_sizes), size=(int(num), self.num_factors))

    def sample_observations_from_factors(
        self, factors: np.ndarray, rng: np.random.Generator | None = None
    ) -> jax.Array | np.ndarray:
        """Render (or look up) the images of factor classes.

        Args:
          factors: ``(num, 5)`` integer factor classes.
          rng: unused (rendering is deterministic); accepted for the protocol.

        Returns:
          ``(num, 64, 64, 1)`` (or ``(num, 64, 64)`` without ``channel_axis``) float32 in {0, 1}.

        Raises:
          ValueError: wrong shape or classes out of range.
          TypeError: non-integer classes.
        """
        del rng
        f = check_factor_classes(factors, self.factor_sizes, self.factor_names)
        if self.images is None:
            images = _render_nhwc(jnp.asarray(f, jnp.int32))
        else:
            rows = dsprites.flat_index(f)
            order = np.argsort(rows)  # sorted reads: faster on a memory-mapped array
            picked = np.empty((len(rows), 64, 64), np.float32)
            picked[order] = np.asarray(self.images[rows[order]], np.float32)
            images = jnp.asarray(picked[..., None])
        if not self.channel_axis:
            images = images[..., 0]
        return np.asarray(images) if self.to_numpy else images


def make_batch_fn(
    seed: int, batch_size: int, *, keys: Sequence[str] = ("image",)
) -> Callable[[int], dict[str, jax.Array]]:
    """Training batches of dSprites rendered on device, deterministic in ``(seed, step)``.

    Args:
      seed: seeds the per-step draws (``fold_in(key(seed), step)``).
      batch_size: images per key and batch.
      keys: the batch keys; each gets its own independent uniform draw (e.g.
        ``("image", "image_disc")`` for FactorVAE's two half-batches).

    Returns:
      ``batch_fn(step) -> {key: (batch_size, 64, 64, 1) float32}``. ``batch_fn(step,
      rows=slice)`` renders only those rows of each key (the same images as
      ``batch_fn(step)[key][rows]``); ``batch_fn.global_batch_size == batch_size``.

    Raises:
      ValueError: ``batch_size < 1`` or empty/duplicated ``keys``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    keys = tuple(keys)
    if not keys or len(set(keys)) != len(keys):
        raise ValueError(f"keys must be distinct and non-empty; got {keys}")
    base = jax.random.key(seed)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def render_step(step: jax.Array, start: int, stop: int) -> dict[str, jax.Array]:
        classes = dsprites.sample_factor_classes(
            jax.random.fold_in(base, step), len(keys) * batch_size
        )
        # the factors of the whole batch are drawn, only rows start..stop are rendered
        classes = classes.reshape(len(keys), batch_size, -1)[:, start:stop]
        images = dsprites.render_from_classes(classes.reshape(-1, classes.shape[-1]))[..., None]
        images = images.reshape(len(keys), stop - start, *images.shape[1:])
        return {k: images[i] for i, k in enumerate(keys)}

    def batch_fn(step: int, rows: slice | None = None) -> dict[str, jax.Array]:
        start, stop, stride = (rows or slice(None)).indices(batch_size)
        if stride != 1:
            raise ValueError(f"rows must be a contiguous slice; got {rows}")
        return render_step(jnp.asarray(step, jnp.uint32), start, stop)

    # vae_xai.train.fit asks for one process's rows only (several processes)
    batch_fn.global_batch_size = batch_size  # type: ignore[attr-defined]
    return batch_fn
