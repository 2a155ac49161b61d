"""Anomaly maps ``(N, H, W)`` over a test set, and the registry of map producers.

Every map is float32 NumPy at the input resolution, higher = more anomalous, never normalized
per image. The functions (:func:`reconstruction_error_maps`, :func:`anomaly_attention_maps`,
the model-free :func:`center_prior_maps` and :func:`intensity_maps`) take arrays; the
producers wrap them as small objects with a ``name`` (the map's key in results) and one
``produce(ctx)``, registered by kind in :data:`PRODUCERS`. Each registered class builds its
own instances from an experiment's ``config.eval`` (``from_config(eval_config, **context)``,
a list) and checks its arguments in its constructor, raising
:class:`~vae_xai.validation.ConfigError` with the config field, so a bad entry fails the same
way whether it comes from a config or from a direct call.
:func:`vae_xai.localization.producers.producers_from_config` composes them:

* ``"recon"`` -- :class:`ReconstructionError` (the paper's "vanilla VAE" baseline);
* ``"center_prior"``, ``"intensity"`` -- the model-free baselines (``baseline = True``),
  one per mention in ``eval.baselines``;
* ``"attention"`` -- :class:`AnomalyAttention`, one per ``criterion x reference x layer``
  (``eval.criteria``, ``eval.references``, ``eval.layers``), named by
  :func:`attention_map_name`;
* the VAE maps beyond the paper named in ``eval.maps`` (input gradients, "combi", energy
  projection, attention-weighted reconstruction error), in
  :mod:`vae_xai.localization.vae_maps`.

The entries several producers and evaluators read (``layers``, ``references``,
``criteria``, ``baselines``) are read by :func:`eval_names`, with their defaults here, so
every reader sees the same value.

A :class:`Context` holds what producers and evaluators share: the model and its variables,
the training images (for the empirical reference statistics, computed once), the test set,
the eval batch size and seed.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from vae_xai import distributed, validation
from vae_xai.attention import (
    aggregate_attention,
    anomaly_attention,
    reference_statistics,
    upsample,
)
from vae_xai.encoder_split import split_encoder

# Scores differentiated by anomaly attention: the paper's Eq. 5 draw, or the per-latent KL
# divergence from the reference (vae_xai.attention.latent_kl_score).
ANOMALY_CRITERIA = ("difference", "kl")


def _batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _padded(x: np.ndarray, start: int, stop: int, batch_size: int) -> np.ndarray:
    """``x[start:stop]`` padded to ``batch_size`` by repeating the last row (one compile)."""
    chunk = x[start:stop]
    if len(chunk) < batch_size:
        pad = np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)
        chunk = np.concatenate([chunk, pad])
    return chunk


def _check_images(images: ArrayLike, name: str = "images") -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"{name} must be a non-empty (N, H, W, C) array; got {images.shape}")
    finite = np.isfinite(images).reshape(len(images), -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} hold NaN or inf values in {len(bad)} of {len(images)} images (first "
            f"indices: {', '.join(map(str, bad[:5].tolist()))}); every map would be NaN there"
        )
    return images


def encoder_statistics(
    model: Any, variables: Mapping[str, Any], images: ArrayLike, *, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``(mu, logvar)`` of every image, in eval mode (BatchNorm running statistics).

    Args:
      model: the VAE module (has an ``encode`` method).
      variables: its variables.
      images: ``(N, H, W, C)`` in [0, 1].
      batch_size: images per encoder pass; the last batch is padded so one compile serves all.

    Returns:
      ``(mu, logvar)``, each ``(N, D)`` NumPy.

    Raises:
      ValueError: ``images`` is not a non-empty 4-D array, or ``batch_size < 1``.
    """
    images = _check_images(images)

    @jax.jit
    def run(x):
        out = model.apply(variables, x, train=False, method="encode")
        return out["mu"], out["logvar"]

    batches = _batches(len(images), batch_size)
    outs = distributed.map_batches(
        lambda b: run(_padded(images, *batches[b], batch_size)), len(batches)
    )
    mu = np.concatenate([m[: e - s] for (m, _), (s, e) in zip(outs, batches, strict=True)])
    logvar = np.concatenate([v[: e - s] for (_, v), (s, e) in zip(outs, batches, strict=True)])
    return mu, logvar


def reconstruction_error_maps(
    model: Any, variables: Mapping[str, Any], images: ArrayLike, *, batch_size: int = 32
) -> np.ndarray:
    """Per-pixel squared reconstruction error ``sum_c (x - sigmoid(logits(mu)))^2``.

    The "vanilla VAE" baseline of the paper's tables: decode the posterior mean (no sampling,
    so the map is deterministic) in eval mode.

    Args:
      model: the VAE module.
      variables: its variables.
      images: ``(N, H, W, C)`` in [0, 1].
      batch_size: images per model pass.

    Returns:
      ``(N, H, W)`` float32.
    """
    images = _check_images(images)

    @jax.jit
    def run(x):
        out = model.apply(variables, x, None, train=False)
        return jnp.sum(jnp.square(x - jax.nn.sigmoid(out["logits"])), axis=-1)

    batches = _batches(len(images), batch_size)
    outs = distributed.map_batches(
        lambda b: run(_padded(images, *batches[b], batch_size)), len(batches)
    )
    maps = [m[: e - s] for m, (s, e) in zip(outs, batches, strict=True)]
    return np.concatenate(maps).astype(np.float32)


def center_prior_maps(shape: tuple[int, int, int]) -> np.ndarray:
    """A model-free baseline map: minus the distance to the image centre.

    The same map for every image. It knows nothing about anomalies, only that they tend to
    lie near the middle of a centred object; its pixel AUROC is the floor a learned map has to
    beat to show it localizes anything (measured on MVTec-AD ``bottle`` in RESULTS.md, section
    "MVTec-AD bottle localization (paper Table 2)").

    Args:
      shape: ``(N, H, W)`` of the maps.

    Returns:
      ``(N, H, W)`` float32.
    """
    n, h, w = (int(v) for v in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.sqrt(np.square(yy - (h - 1) / 2) + np.square(xx - (w - 1) / 2))
    return np.broadcast_to(-dist, (n, h, w)).copy()


def intensity_maps(images: ArrayLike) -> np.ndarray:
    """A model-free baseline map: the input itself, averaged over channels.

    Grad-CAM maps are weighted sums of feature activations, so they are large wherever the
    features fire -- on MNIST, wherever there is ink. This map scores "brighter is more
    anomalous"; an attention map that does not beat it localizes no better than the ink does.

    Args:
      images: ``(N, H, W, C)``.

    Returns:
      ``(N, H, W)`` float32.
    """
    return _check_images(images).mean(axis=-1)


def anomaly_attention_maps(
    model: Any,
    variables: Mapping[str, Any],
    images: ArrayLike,
    *,
    layer: str,
    key: jax.Array,
    ref_mu: ArrayLike = 0.0,
    ref_var: ArrayLike = 1.0,
    sample: bool = True,
    num_samples: int = 1,
    criterion: str = "difference",
    dense_after: str | None = None,
    batch_size: int = 16,
    output_size: tuple[int, int] | None = None,
    latent_chunk: int | None = None,
    rectify: str = "relu",
) -> np.ndarray:
    """Anomaly attention (paper Sec. 3.3) at encoder ``layer``, one map per image.

    For each image: split the encoder at ``layer`` (eval mode), draw the latent scores from
    ``N(ref_mu - mu, ref_var + sigma^2)`` (Eq. 5; the mean ``ref_mu - mu`` if not ``sample``),
    take the per-latent Grad-CAM maps, average them over the latent dims (Eq. 4) and over
    ``num_samples`` independent draws, and upsample bilinearly to ``output_size``.
    ``criterion="kl"`` differentiates each latent's KL divergence from the reference instead
    of the Eq. 5 draw (see :func:`vae_xai.attention.anomaly_attention`); it is deterministic.

    Args:
      model: the VAE module.
      variables: its variables.
      images: ``(N, H, W, C)`` in [0, 1].
      layer: the encoder layer whose activations are weighted.
      key: noise for the draws; batch ``b`` uses ``fold_in(key, b)``, so the maps are
        reproducible for a given ``batch_size``.
      ref_mu: reference mean, scalar or ``(D,)``: the N(0, 1) prior by default, or the
        empirical statistics of :func:`vae_xai.attention.reference_statistics`.
      ref_var: reference variance, likewise.
      sample: draw the Eq. 5 score (``True``) or use its mean.
      num_samples: independent draws averaged (1 when not sampling or for ``"kl"``).
      criterion: one of :data:`ANOMALY_CRITERIA`.
      dense_after: the Dense layer after ``layer`` (the fast attention path), or ``None``.
      batch_size: images per pass.
      output_size: ``(H, W)`` of the maps; default the input's.
      latent_chunk: latent dims differentiated together (memory bound); ``None`` for all.
      rectify: ``"relu"`` (the paper), ``"abs"`` or ``"none"``
        (:func:`vae_xai.attention.rectify_map`).

    Returns:
      ``(N, H, W)`` float32 (``output_size`` if given).

    Raises:
      ValueError: bad ``images``, ``num_samples < 1`` or an unknown ``criterion``.
    """
    images = _check_images(images)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1; got {num_samples}")
    if criterion not in ANOMALY_CRITERIA:
        raise ValueError(f"criterion must be one of {ANOMALY_CRITERIA}; got {criterion!r}")
    if not sample or criterion == "kl":
        num_samples = 1
    size = tuple(images.shape[1:3]) if output_size is None else tuple(output_size)
    ref_mu = jnp.asarray(ref_mu, jnp.float32)
    ref_var = jnp.asarray(ref_var, jnp.float32)

    @jax.jit
    def run(x, k):
        split = split_encoder(
            model, variables, x, layer=layer, method="encode", dense_after=dense_after, train=False
        )

        def one(sample_key):
            maps = anomaly_attention(
                **split.attention_kwargs(),
                key=sample_key,
                ref_mu=ref_mu,
                ref_var=ref_var,
                sample=sample,
                criterion=criterion,
                rectify=rectify,
                latent_chunk=latent_chunk,
            )
            return aggregate_attention(maps)

        overall = jnp.mean(jax.lax.map(one, jax.random.split(k, num_samples)), axis=0)
        return upsample(overall, size)

    batches = _batches(len(images), batch_size)
    outs = distributed.map_batches(
        lambda b: run(_padded(images, *batches[b], batch_size), jax.random.fold_in(key, b)),
        len(batches),
    )
    out = [m[: e - s] for m, (s, e) in zip(outs, batches, strict=True)]
    return np.concatenate(out).astype(np.float32)


def attention_maps_for_layers(
    model: Any,
    variables: Mapping[str, Any],
    test_images: ArrayLike,
    *,
    layers: Sequence[str],
    references: Mapping[str, tuple[ArrayLike, ArrayLike]],
    key: jax.Array,
    dense_after: Callable[[str], str | None] = lambda layer: None,
    sample: bool = True,
    num_samples: int = 1,
    criteria: Sequence[str] = ("difference",),
    batch_size: int = 16,
) -> dict[str, np.ndarray]:
    """Anomaly attention maps for every criterion, reference and layer.

    Every (reference, layer) pair uses the same ``key``, so they see the same noise draws.

    Args:
      model: the VAE module.
      variables: its variables.
      test_images: ``(N, H, W, C)`` in [0, 1].
      layers: encoder layers.
      references: a name (e.g. ``"prior"``, ``"empirical"``) to ``(ref_mu, ref_var)``.
      key: noise for the draws.
      dense_after: the Dense after a layer (the fast attention path), or ``None``.
      sample: see :func:`anomaly_attention_maps`.
      num_samples: see :func:`anomaly_attention_maps`.
      criteria: entries of :data:`ANOMALY_CRITERIA`.
      batch_size: images per pass.

    Returns:
      ``{attention_map_name(criterion, ref, layer): (N, H, W) float32}``.
    """
    out = {}
    for criterion in criteria:
        for ref_name, (ref_mu, ref_var) in references.items():
            for layer in layers:
                out[attention_map_name(criterion, ref_name, layer)] = anomaly_attention_maps(
                    model,
                    variables,
                    test_images,
                    layer=layer,
                    key=key,
                    ref_mu=ref_mu,
                    ref_var=ref_var,
                    sample=sample,
                    num_samples=num_samples,
                    criterion=criterion,
                    dense_after=dense_after(layer),
                    batch_size=batch_size,
                )
    return out


def attention_map_name(criterion: str, reference: str, layer: str) -> str:
    """The name of an anomaly attention map in results: ``attention[_kl]_<ref>_<layer>``.

    Args:
      criterion: one of :data:`ANOMALY_CRITERIA` (``"difference"`` adds no infix).
      reference: the reference name.
      layer: the encoder layer.

    Returns:
      The name.

    Raises:
      ValueError: an unknown ``criterion``.
    """
    if criterion not in ANOMALY_CRITERIA:
        raise ValueError(f"criterion must be one of {ANOMALY_CRITERIA}; got {criterion!r}")
    prefix = "attention" if criterion == "difference" else f"attention_{criterion}"
    return f"{prefix}_{reference}_{layer}"


def reference_sets(
    model: Any,
    variables: Mapping[str, Any],
    train_images: ArrayLike,
    names: Sequence[str],
    *,
    batch_size: int = 32,
) -> dict[str, tuple[np.ndarray | float, np.ndarray | float]]:
    """Reference statistics ``{name: (ref_mu, ref_var)}`` for anomaly attention.

    Args:
      model: the VAE module.
      variables: its variables.
      train_images: the (normal) training images, for ``"empirical"``.
      names: ``"prior"`` (N(0, 1)) and/or ``"empirical"`` (the aggregate posterior of the
        training images in eval mode, :func:`vae_xai.attention.reference_statistics`).
      batch_size: images per encoder pass.

    Returns:
      ``{name: (ref_mu, ref_var)}``: floats for ``"prior"``, ``(D,)`` arrays for ``"empirical"``.

    Raises:
      ValueError: an unknown name.
    """
    out: dict[str, tuple[np.ndarray | float, np.ndarray | float]] = {}
    for name in names:
        if name == "prior":
            out[name] = (0.0, 1.0)
        elif name == "empirical":
            mu, logvar = encoder_statistics(model, variables, train_images, batch_size=batch_size)
            ref_mu, ref_var = reference_statistics(mu, logvar)
            out[name] = (np.asarray(ref_mu), np.asarray(ref_var))
        else:
            raise ValueError(f'reference statistics must be "prior" or "empirical"; got {name!r}')
    return out


REFERENCES = ("prior", "empirical")


# ----------------------------------------------------------------------------- context


@dataclasses.dataclass
class Context:
    """What map producers and evaluators share for one evaluation.

    ``test_images`` ``(N, H, W, C)`` in [0, 1], ``masks`` ``(N, H, W)``, ``labels`` ``(N,)``
    (1 anomalous), ``groups`` ``(N,)`` defect types (or ``None``); ``dense_after(layer)``
    names the Dense after ``layer`` (the fast attention path) or ``None``; attention noise
    comes from ``jax.random.key(seed)``; every model pass runs in batches of ``batch_size``;
    figures go to ``figure_dir`` (none if ``None``), titled ``title``. ``likelihood``,
    ``variance`` and ``beta`` are the model's training loss (the input-gradient and
    projection maps of :mod:`vae_xai.localization.vae_maps` differentiate it).

    Maps are produced through :meth:`map_of`, which keeps each map and its cost, so a
    producer that combines others (e.g. ``combi``) reuses maps already made.
    """

    model: Any
    variables: Mapping[str, Any]
    train_images: ArrayLike
    test_images: ArrayLike
    masks: ArrayLike
    labels: ArrayLike
    groups: ArrayLike | None = None
    dense_after: Callable[[str], str | None] = lambda layer: None
    seed: int = 0
    batch_size: int = 16
    figure_dir: str | pathlib.Path | None = None
    title: str | None = None
    likelihood: str = "gaussian"
    variance: float = 0.5
    beta: float = 1.0
    _references: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict, repr=False)
    _produced: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    _seconds: dict[str, float] = dataclasses.field(default_factory=dict, repr=False)
    _borrowed: list[float] = dataclasses.field(default_factory=lambda: [0.0], repr=False)

    def __post_init__(self) -> None:
        self.test_images = _check_images(self.test_images)

    def map_of(self, producer: MapProducer) -> np.ndarray:
        """``producer``'s map, produced once per context and kept by name.

        Its cost (:meth:`seconds`) is the wall time of producing it plus the cost of the kept
        maps it reused, i.e. what it would cost on its own (including jit compilation).

        Args:
          producer: a :class:`MapProducer`.

        Returns:
          ``(N, H, W)`` float32.
        """
        name = producer.name
        if name in self._produced:
            self._borrowed[0] += self._seconds[name]
            return self._produced[name]
        borrowed0, t0 = self._borrowed[0], time.perf_counter()
        out = np.asarray(producer.produce(self), np.float32)
        wall = time.perf_counter() - t0
        self._produced[name] = out
        self._seconds[name] = wall + (self._borrowed[0] - borrowed0)
        return out

    def seconds(self, name: str) -> float:
        """The cost in seconds of map ``name`` on its own (see :meth:`map_of`).

        Args:
          name: a map already produced by :meth:`map_of`.

        Returns:
          Seconds.
        """
        return self._seconds[name]

    @property
    def key(self) -> jax.Array:
        """The attention noise key, ``jax.random.key(seed)``."""
        return jax.random.key(self.seed)

    def reference(self, name: str) -> tuple[Any, Any]:
        """``(ref_mu, ref_var)`` of reference ``name`` (:func:`reference_sets`), computed once.

        Args:
          name: ``"prior"`` or ``"empirical"``.

        Returns:
          ``(ref_mu, ref_var)``.
        """
        if name not in self._references:
            self._references.update(
                reference_sets(
                    self.model,
                    self.variables,
                    self.train_images,
                    (name,),
                    batch_size=self.batch_size,
                )
            )
        return self._references[name]

    def display_groups(self) -> np.ndarray:
        """``groups``, or ``"normal"``/``"anomalous"`` from ``labels`` (one figure each)."""
        if self.groups is not None:
            return np.asarray(self.groups)
        return np.where(np.asarray(self.labels) > 0, "anomalous", "normal")


# ----------------------------------------------------------------------------- config entries

# The defaults of the ``config.eval`` entries that several producers and evaluators read.
DEFAULT_CRITERIA = ("difference",)
DEFAULT_BASELINES = ("center_prior",)


def check_entry(check: Callable[..., None], field: str, value: Any, *args: Any, **kw: Any) -> None:
    """Run a check of :mod:`vae_xai.validation` on one value, as config field ``field``.

    Constructors receive values, not configs; this puts ``value`` at the dotted ``field`` of
    a config of its own, so the check's :class:`~vae_xai.validation.ConfigError` names the
    field and reads exactly as when the launcher checks the config.

    Args:
      check: e.g. :func:`vae_xai.validation.at_least`, called as ``check(config, field,
        *args, **kw)``.
      field: the dotted config field, e.g. ``"eval.num_samples"``.
      value: its value.
    """
    config: Any = value
    for part in reversed(field.split(".")):
        config = {part: config}
    check(config, field, *args, **kw)


def eval_names(
    eval_config: Mapping[str, Any],
    key: str,
    default: Sequence[str],
    choices: Sequence[str] | None = None,
    *,
    allow_empty: bool = True,
    field: str | None = None,
) -> tuple[str, ...]:
    """A sequence-of-names entry of ``config.eval`` (``layers``, ``references``, ...).

    Args:
      eval_config: the ``config.eval`` mapping (or one of its blocks, with ``field``).
      key: the entry; absent or ``None`` means ``default``.
      default: its default.
      choices: the known names, or ``None`` when any name is accepted (``layers``, checked
        against the model by :func:`vae_xai.validation.model_layers`).
      allow_empty: whether an empty sequence is accepted.
      field: the dotted field named in errors; default ``eval.<key>``.

    Returns:
      The names, in order.

    Raises:
      ConfigError: naming the field, for a string (a sequence of names is expected), an
        empty sequence unless ``allow_empty``, or a name not in ``choices``.
    """
    value = eval_config.get(key)
    value = tuple(default) if value is None else value
    field = f"eval.{key}" if field is None else field
    if choices is not None:
        check_entry(validation.subset, field, value, tuple(choices), allow_empty=allow_empty)
    elif isinstance(value, str):
        raise validation.ConfigError(
            field, f"must be a sequence of names, not the string {value!r}"
        )
    elif not allow_empty and not value:
        raise validation.ConfigError(field, "must not be empty")
    return tuple(value)


def eval_layers(eval_config: Mapping[str, Any]) -> tuple[str, ...]:
    """``eval.layers`` (default none): the encoder layers of the attention maps.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The layer names.
    """
    return eval_names(eval_config, "layers", ())


def eval_references(eval_config: Mapping[str, Any]) -> tuple[str, ...]:
    """``eval.references`` (default :data:`REFERENCES`), non-empty.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The reference names.

    Raises:
      ConfigError: see :func:`eval_names`.
    """
    return eval_names(eval_config, "references", REFERENCES, REFERENCES, allow_empty=False)


def eval_criteria(eval_config: Mapping[str, Any]) -> tuple[str, ...]:
    """``eval.criteria`` (default :data:`DEFAULT_CRITERIA`), non-empty.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The criteria, entries of :data:`ANOMALY_CRITERIA`.

    Raises:
      ConfigError: see :func:`eval_names`.
    """
    return eval_names(
        eval_config, "criteria", DEFAULT_CRITERIA, ANOMALY_CRITERIA, allow_empty=False
    )


def eval_baselines(eval_config: Mapping[str, Any]) -> tuple[str, ...]:
    """``eval.baselines`` (default :data:`DEFAULT_BASELINES`); may be empty.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The baseline kinds, each one of :func:`baseline_kinds`.

    Raises:
      ConfigError: see :func:`eval_names`.
    """
    return eval_names(eval_config, "baselines", DEFAULT_BASELINES, baseline_kinds())


def eval_sampling(eval_config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"sample", "num_samples"}`` of the attention maps (defaults ``True``, 1).

    Unchecked: the constructors that take them check them.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      Keyword arguments for :class:`AnomalyAttention`.
    """
    return dict(
        sample=bool(eval_config.get("sample", True)),
        num_samples=eval_config.get("num_samples", 1),
    )


# ----------------------------------------------------------------------------- producers


class MapProducer(Protocol):
    """A named map type: ``produce(ctx) -> (N, H, W)`` float32 over ``ctx.test_images``."""

    name: str

    def produce(self, ctx: Context) -> np.ndarray:
        """The map of ``ctx.test_images``.

        Args:
          ctx: the shared :class:`Context`.

        Returns:
          ``(N, H, W)`` float32, higher = more anomalous.
        """
        ...


# Producer classes by kind. A class that ``config.eval`` selects has a classmethod
# ``from_config(eval_config, **context) -> list`` and checks its arguments in its constructor.
PRODUCERS: dict[str, type] = {}


def register_producer(kind: str) -> Callable[[type], type]:
    """Class decorator: make a producer buildable by ``kind`` (:data:`PRODUCERS`).

    Args:
      kind: the registry key, also set as the class's ``kind``.

    Returns:
      The decorator, which returns the class unchanged apart from ``kind``.

    Raises:
      ValueError: ``kind`` is already registered.
    """

    def register(cls: type) -> type:
        if kind in PRODUCERS:
            raise ValueError(f"map producer {kind!r} is already registered")
        PRODUCERS[kind] = cls
        cls.kind = kind
        return cls

    return register


def baseline_kinds() -> tuple[str, ...]:
    """The registered kinds of the model-free baselines (classes with ``baseline = True``).

    Returns:
      The names ``eval.baselines`` accepts, in registration order.
    """
    return tuple(kind for kind, cls in PRODUCERS.items() if getattr(cls, "baseline", False))


@register_producer("recon")
@dataclasses.dataclass(frozen=True)
class ReconstructionError:
    """:func:`reconstruction_error_maps` at ``z = mu`` (eval mode)."""

    name: ClassVar[str] = "recon"

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[MapProducer]:
        """Always one: every evaluation reports the reconstruction error first.

        Args:
          eval_config: the ``config.eval`` mapping (unused).
          **context: unused.

        Returns:
          ``[ReconstructionError()]``.
        """
        return [cls()]

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`reconstruction_error_maps` of ``ctx.test_images``.

        Args:
          ctx: the shared :class:`Context`.

        Returns:
          ``(N, H, W)`` float32.
        """
        return reconstruction_error_maps(
            ctx.model, ctx.variables, ctx.test_images, batch_size=ctx.batch_size
        )


class ModelFreeBaseline:
    """A baseline map that uses no model, selected by its kind in ``eval.baselines``."""

    baseline: ClassVar[bool] = True

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[MapProducer]:
        """One instance (it has no parameters); built once per mention in ``eval.baselines``.

        Args:
          eval_config: the ``config.eval`` mapping (unused).
          **context: unused.

        Returns:
          ``[cls()]``.
        """
        return [cls()]


@register_producer("center_prior")
@dataclasses.dataclass(frozen=True)
class CenterPrior(ModelFreeBaseline):
    """:func:`center_prior_maps`: model-free, minus the distance to the image centre."""

    name: ClassVar[str] = "center_prior"

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`center_prior_maps` of the shape of ``ctx.test_images``.

        Args:
          ctx: the shared :class:`Context`.

        Returns:
          ``(N, H, W)`` float32.
        """
        return center_prior_maps(np.shape(ctx.test_images)[:3])


@register_producer("intensity")
@dataclasses.dataclass(frozen=True)
class Intensity(ModelFreeBaseline):
    """:func:`intensity_maps`: model-free, the input averaged over channels."""

    name: ClassVar[str] = "intensity"

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`intensity_maps` of ``ctx.test_images``.

        Args:
          ctx: the shared :class:`Context`.

        Returns:
          ``(N, H, W)`` float32.
        """
        return intensity_maps(ctx.test_images)


@register_producer("attention")
@dataclasses.dataclass(frozen=True)
class AnomalyAttention:
    """:func:`anomaly_attention_maps` for one ``criterion x reference x layer``.

    Every instance draws from ``ctx.key`` (the same noise for every reference and layer, as
    :func:`attention_maps_for_layers` does).

    Raises:
      ConfigError: an unknown ``criterion`` (``eval.criteria``) or ``reference``
        (``eval.references``), or ``num_samples`` not an integer >= 1 (``eval.num_samples``).
    """

    criterion: str
    reference: str
    layer: str
    sample: bool = True
    num_samples: int = 1

    def __post_init__(self) -> None:
        check_entry(validation.one_of, "eval.criteria", self.criterion, ANOMALY_CRITERIA)
        check_entry(validation.one_of, "eval.references", self.reference, REFERENCES)
        check_entry(validation.at_least, "eval.num_samples", self.num_samples, 1)
        object.__setattr__(self, "num_samples", int(self.num_samples))

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[MapProducer]:
        """One per ``eval.criteria`` x ``eval.references`` x ``eval.layers``, in that order
        (layers fastest), with ``eval.sample`` and ``eval.num_samples``.

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          The producers (none when ``eval.layers`` is empty).
        """
        criteria, references = eval_criteria(eval_config), eval_references(eval_config)
        layers, sampling = eval_layers(eval_config), eval_sampling(eval_config)
        return [
            cls(c, r, layer, **sampling) for c in criteria for r in references for layer in layers
        ]

    @property
    def name(self) -> str:
        """The map's name, :func:`attention_map_name`."""
        return attention_map_name(self.criterion, self.reference, self.layer)

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`anomaly_attention_maps` of ``ctx.test_images`` with this instance's settings.

        Args:
          ctx: the shared :class:`Context` (key, reference statistics, batch size).

        Returns:
          ``(N, H, W)`` float32.
        """
        ref_mu, ref_var = ctx.reference(self.reference)
        return anomaly_attention_maps(
            ctx.model,
            ctx.variables,
            ctx.test_images,
            layer=self.layer,
            key=ctx.key,
            ref_mu=ref_mu,
            ref_var=ref_var,
            sample=self.sample,
            num_samples=self.num_samples,
            criterion=self.criterion,
            dense_after=ctx.dense_after(self.layer),
            batch_size=ctx.batch_size,
        )
