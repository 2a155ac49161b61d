"""Evaluators over produced maps (big_vision's ``evaluators/`` shape).

An evaluator is a small object with one uniform ``run(ctx, maps)`` that yields
``(name, value)`` pairs; ``name`` is ``"<section>/<item>"`` and :func:`collect` nests the
pairs into a results dict (``results[section][item] = value``; the ``"figures"`` section is
the list of written paths). Its class is registered by kind (:data:`EVALUATORS`), builds its
instances from ``config.eval`` (``from_config(eval_config, **context)``, a list) and checks
its arguments in its constructor, raising :class:`~vae_xai.validation.ConfigError` with the
config field; :func:`evaluators_from_config` looks up each kind that ``eval.evaluators`` names:

* ``"localization"`` -- :class:`LocalizationMetrics`: pooled pixel AUROC, best IoU, AUPRO,
  image AUROC of every map, overall and per defect type (``metrics/<map>``);
* ``"latent_detection"`` -- :class:`LatentDetection`: image AUROC of the total latent KL from
  each reference (``latent_detection/kl_<ref>``);
* ``"roc_figure"`` -- :class:`RocFigure`: ``roc.png``, the pooled pixel ROC of every map;
* ``"overlays"`` -- :class:`Overlays`: one ``overlay_<group>.png`` per group.

The metric functions themselves (:func:`localization_metrics`, :func:`evaluate_maps`,
:func:`latent_detection`, ...) take arrays and are usable on their own.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from vae_xai import metrics, validation
from vae_xai.attention import latent_kl_score
from vae_xai.localization.figures import save_overlays, save_roc_figure
from vae_xai.localization.maps import (
    REFERENCES,
    Context,
    attention_map_name,
    baseline_kinds,
    check_entry,
    encoder_statistics,
    eval_criteria,
    eval_layers,
    eval_names,
    eval_references,
)


def image_scores(maps: ArrayLike, *, reduce: Literal["max", "mean"] = "max") -> np.ndarray:
    """Per-image anomaly scores from maps: each map's max (or mean).

    Args:
      maps: ``(N, H, W)``.
      reduce: ``"max"`` or ``"mean"``.

    Returns:
      ``(N,)`` scores.

    Raises:
      ValueError: an unknown ``reduce``.
    """
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1)
    if reduce == "max":
        return flat.max(axis=1)
    if reduce == "mean":
        return flat.mean(axis=1)
    raise ValueError(f'reduce must be "max" or "mean"; got {reduce!r}')


def localization_metrics(
    maps: ArrayLike,
    masks: ArrayLike,
    labels: ArrayLike,
    *,
    max_fpr: float = 0.3,
    image_score: Literal["max", "mean"] = "max",
) -> dict[str, Any]:
    """Pooled localization metrics of one map type on one set of images.

    Args:
      maps: ``(N, H, W)`` scores (raw, never normalized per image).
      masks: ``(N, H, W)`` ground truth in {0, 1}.
      labels: ``(N,)`` image labels, 1 anomalous.
      max_fpr: AUPRO integration limit.
      image_score: how a map becomes an image score for the image AUROC (:func:`image_scores`).

    Returns:
      ``{"pixel_auroc", "best_iou", "aupro", "image_auroc", "n_images", "n_anomalous"}``;
      a metric that is undefined on this set (no anomalous pixels, or a single image class)
      is ``None``.

    Raises:
      ValueError: mismatched shapes, or maps with NaN or inf.
    """
    maps = np.asarray(maps, np.float32)
    masks = np.asarray(masks).astype(bool)
    labels = np.asarray(labels).astype(np.int32)
    if maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"maps and masks must both be (N, H, W); got {maps.shape}, {masks.shape}")
    if labels.shape != (len(maps),):
        raise ValueError(f"labels must be (N,) with N={len(maps)}; got {labels.shape}")
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps contain NaN or inf")
    has_pos, has_neg = bool(masks.any()), bool((~masks).any())
    pixel_ok = has_pos and has_neg
    out: dict[str, Any] = {
        "pixel_auroc": float(metrics.pixel_auroc(maps, masks)) if pixel_ok else None,
        "best_iou": float(metrics.best_iou(maps, masks)) if has_pos else None,
        "aupro": float(metrics.aupro(maps, masks, max_fpr=max_fpr)) if pixel_ok else None,
        "image_auroc": None,
        "n_images": len(maps),
        "n_anomalous": int(labels.sum()),
    }
    if 0 < labels.sum() < len(labels):
        out["image_auroc"] = float(
            metrics.image_auroc(image_scores(maps, reduce=image_score), labels)
        )
    return out


def evaluate_maps(
    maps_by_name: Mapping[str, ArrayLike],
    masks: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    max_fpr: float = 0.3,
    image_score: Literal["max", "mean"] = "max",
) -> dict[str, dict[str, Any]]:
    """:func:`localization_metrics` for each map type, overall and per group (defect type).

    The subset of a defect type is its own images plus all normal (``label == 0``) images, so
    every metric, including the image AUROC, is defined per type; groups with only normal
    images are skipped (:func:`group_subsets`).

    Args:
      maps_by_name: ``{name: (N, H, W) maps}``.
      masks: ``(N, H, W)`` ground truth.
      labels: ``(N,)``, 1 anomalous.
      groups: ``(N,)`` defect type of each image, or ``None`` (no ``per_defect``).
      max_fpr: AUPRO integration limit.
      image_score: ``"max"`` or ``"mean"`` (:func:`image_scores`).

    Returns:
      ``{name: {"overall": metrics, "per_defect": {group: metrics}}}`` (``per_defect`` only
      with ``groups``).
    """
    labels = np.asarray(labels)
    masks = np.asarray(masks)
    results: dict[str, dict[str, Any]] = {}
    for name, maps in maps_by_name.items():
        maps = np.asarray(maps)
        entry: dict[str, Any] = {
            "overall": localization_metrics(
                maps, masks, labels, max_fpr=max_fpr, image_score=image_score
            )
        }
        if groups is not None:
            entry["per_defect"] = {
                g: localization_metrics(
                    maps[sel], masks[sel], labels[sel], max_fpr=max_fpr, image_score=image_score
                )
                for g, sel in group_subsets(labels, groups).items()
            }
        results[name] = entry
    return results


def group_subsets(labels: ArrayLike, groups: ArrayLike) -> dict[str, np.ndarray]:
    """``{group: boolean selector (N,)}``: each anomalous group's images plus all normal ones.

    Args:
      labels: ``(N,)``, 0 normal.
      groups: ``(N,)`` group names.

    Returns:
      One selector per name in ``groups`` of an image with ``label != 0``, sorted by name; a
      group that names only normal images (e.g. ``"good"``) gets none.

    Raises:
      ValueError: ``groups`` and ``labels`` differ in shape.
    """
    labels = np.asarray(labels)
    groups_arr = np.asarray(groups).astype(str)
    if groups_arr.shape != labels.shape:
        raise ValueError(f"groups {groups_arr.shape} and labels {labels.shape} differ in shape")
    normal = labels == 0
    return {g: (groups_arr == g) | normal for g in sorted(set(groups_arr[~normal].tolist()))}


def latent_detection(
    model: Any,
    variables: Mapping[str, Any],
    test_images: ArrayLike,
    labels: ArrayLike,
    references: Mapping[str, tuple[ArrayLike, ArrayLike]],
    groups: ArrayLike | None = None,
    *,
    batch_size: int = 32,
) -> dict[str, dict[str, Any]]:
    """Image-level AUROC of the latent code's own anomaly score, per reference statistics.

    The score of an image is its total KL divergence from the reference,
    ``sum_i KL(q(z_i|y) || N(mu_x_i, sigma_x_i^2))``. Anomaly attention explains how the
    *latent code* of an image departs from normal data; if this AUROC is near 0.5 the
    encoder does not tell defective images from good ones, and no map computed from its
    latents can localize the defects. Reported next to the maps as a diagnostic.

    Args:
      model: the VAE module.
      variables: its variables.
      test_images: ``(N, H, W, C)`` in [0, 1].
      labels: ``(N,)``, 1 anomalous.
      references: ``{name: (ref_mu, ref_var)}`` (:func:`~vae_xai.localization.maps.reference_sets`).
      groups: ``(N,)`` defect types, or ``None``.
      batch_size: images per encoder pass.

    Returns:
      ``{"kl_<ref>": {"overall": auroc, "per_defect": {group: auroc}}}`` (``per_defect`` only
      with ``groups``; each group's images plus all normal ones); an AUROC over a single
      class is ``None``.
    """
    labels = np.asarray(labels)
    mu, logvar = encoder_statistics(model, variables, test_images, batch_size=batch_size)
    out: dict[str, dict[str, Any]] = {}
    for name, (ref_mu, ref_var) in references.items():
        score = np.asarray(latent_kl_score(ref_mu, ref_var)(jnp.asarray(mu), jnp.asarray(logvar)))
        score = score.sum(axis=-1)
        entry: dict[str, Any] = {"overall": _auroc_or_none(score, labels)}
        if groups is not None:
            entry["per_defect"] = {
                g: _auroc_or_none(score[sel], labels[sel])
                for g, sel in group_subsets(labels, groups).items()
            }
        out[f"kl_{name}"] = entry
    return out


def _auroc_or_none(score: np.ndarray, labels: np.ndarray) -> float | None:
    if labels.min() == labels.max():
        return None
    return float(metrics.image_auroc(score, labels))


# ----------------------------------------------------------------------------- evaluators

Pairs = Iterator[tuple[str, Any]]


class Evaluator(Protocol):
    """``run(ctx, maps)`` yields ``(name, value)``; ``maps`` are the produced maps by name."""

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
        """Evaluate the produced maps.

        Args:
          ctx: the shared :class:`~vae_xai.localization.maps.Context`.
          maps: the produced maps ``(N, H, W)`` by name.

        Yields:
          ``("<section>/<item>", value)`` pairs (see :func:`collect`).
        """
        ...


# Evaluator classes by kind; each has a classmethod ``from_config(eval_config, **context)``
# returning its instances.
EVALUATORS: dict[str, type] = {}


def register_evaluator(kind: str) -> Callable[[type], type]:
    """Class decorator: make an evaluator buildable by ``kind`` (:data:`EVALUATORS`).

    The class needs a classmethod ``from_config(eval_config, **context)`` returning a list of
    instances (``context`` holds ``produced``, the names of the maps the producers will
    make), whose constructors raise :class:`~vae_xai.validation.ConfigError` naming the
    field of a bad entry. Naming ``kind`` in ``eval.evaluators`` then builds it.

    Args:
      kind: the registry key, also set as the class's ``kind``.

    Returns:
      The decorator, which returns the class unchanged apart from ``kind``.

    Raises:
      ValueError: ``kind`` is already registered.
      TypeError: the class has no ``from_config``.
    """

    def register(cls: type) -> type:
        if kind in EVALUATORS:
            raise ValueError(f"evaluator {kind!r} is already registered")
        if not callable(getattr(cls, "from_config", None)):
            raise TypeError(
                f"evaluator {cls.__name__} needs a classmethod "
                "from_config(eval_config, **context) -> list of instances"
            )
        EVALUATORS[kind] = cls
        cls.kind = kind
        return cls

    return register


IMAGE_SCORES = ("max", "mean")


@register_evaluator("localization")
class LocalizationMetrics:
    """:func:`evaluate_maps` of every map: yields ``("metrics/<map>", entry)``.

    Args:
      max_fpr: AUPRO integration limit, in (0, 1].
      image_score: ``"max"`` or ``"mean"``.

    Raises:
      ConfigError: ``max_fpr`` not in (0, 1] (``eval.max_fpr``), or ``image_score`` not
        ``"max"``/``"mean"`` (``eval.image_score``).
    """

    def __init__(self, *, max_fpr: float = 0.3, image_score: Literal["max", "mean"] = "max"):
        number = isinstance(max_fpr, int | float) and not isinstance(max_fpr, bool)
        if not (number and 0 < max_fpr <= 1):
            raise validation.ConfigError("eval.max_fpr", f"must be in (0, 1]; got {max_fpr!r}")
        check_entry(validation.one_of, "eval.image_score", image_score, IMAGE_SCORES)
        self.max_fpr = max_fpr
        self.image_score = image_score

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[Evaluator]:
        """One, with ``eval.max_fpr`` (default 0.3) and ``eval.image_score`` (default max).

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          ``[LocalizationMetrics(...)]``.
        """
        return [
            cls(
                max_fpr=eval_config.get("max_fpr", 0.3),
                image_score=eval_config.get("image_score", "max"),
            )
        ]

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
        """Yield ``("metrics/<map>", {"overall", "per_defect"})`` for every map.

        Args:
          ctx: the shared context (masks, labels, groups).
          maps: the produced maps by name.

        Yields:
          ``(name, entry)`` pairs.
        """
        per_map = evaluate_maps(
            maps,
            ctx.masks,
            ctx.labels,
            ctx.groups,
            max_fpr=self.max_fpr,
            image_score=self.image_score,
        )
        for name, entry in per_map.items():
            yield f"metrics/{name}", entry


@register_evaluator("latent_detection")
class LatentDetection:
    """:func:`latent_detection` per reference: yields ``("latent_detection/kl_<ref>", entry)``.

    Args:
      references: reference names, each in :data:`~vae_xai.localization.maps.REFERENCES`.

    Raises:
      ConfigError: an unknown reference (``eval.references``).
    """

    def __init__(self, *, references: Sequence[str] = REFERENCES):
        for name in references:
            check_entry(validation.one_of, "eval.references", name, REFERENCES)
        self.references = tuple(references)

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[Evaluator]:
        """One, over ``eval.references``.

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          ``[LatentDetection(...)]``.
        """
        return [cls(references=eval_references(eval_config))]

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
        """Yield ``("latent_detection/kl_<ref>", entry)`` for every reference.

        Args:
          ctx: the shared context (model, test set, reference statistics).
          maps: unused.

        Yields:
          ``(name, entry)`` pairs.
        """
        refs = {name: ctx.reference(name) for name in self.references}
        got = latent_detection(
            ctx.model,
            ctx.variables,
            ctx.test_images,
            ctx.labels,
            refs,
            ctx.groups,
            batch_size=ctx.batch_size,
        )
        for name, entry in got.items():
            yield f"latent_detection/{name}", entry


@register_evaluator("roc_figure")
class RocFigure:
    """``ctx.figure_dir/roc.png`` (:func:`save_roc_figure` of every map); yields its path."""

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[Evaluator]:
        """One; it reads no entry.

        Args:
          eval_config: the ``config.eval`` mapping (unused).
          **context: unused.

        Returns:
          ``[RocFigure()]``.
        """
        return [cls()]

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
        """Write ``roc.png`` unless ``ctx.figure_dir`` is ``None``.

        Args:
          ctx: the shared context (masks, figure directory, title).
          maps: the produced maps by name, all drawn.

        Yields:
          ``("figures/roc", path)``, or nothing without a figure directory.
        """
        if ctx.figure_dir is None:
            return
        path = save_roc_figure(
            pathlib.Path(ctx.figure_dir) / "roc.png", maps, ctx.masks, title=ctx.title
        )
        yield "figures/roc", str(path)


@register_evaluator("overlays")
class Overlays:
    """One ``overlay_<group>.png`` per group (:func:`save_overlays`) of the maps ``shown``.

    Args:
      shown: the map names drawn, in order.
      per_group: images drawn per group.

    Raises:
      ConfigError: ``per_group`` not an integer >= 1 (``eval.overlays_per_group``).
    """

    def __init__(self, *, shown: Sequence[str], per_group: int = 4):
        check_entry(validation.at_least, "eval.overlays_per_group", per_group, 1)
        self.shown = tuple(shown)
        self.per_group = int(per_group)

    @classmethod
    def from_config(
        cls,
        eval_config: Mapping[str, Any],
        *,
        produced: Sequence[str] | None = None,
        **context: Any,
    ) -> list[Evaluator]:
        """One, showing ``recon`` and the attention at ``eval.overlay_layer`` (default the
        first of ``eval.layers``; must be one of them) for each ``eval.criteria`` x
        ``eval.references``; with ``produced``, unless ``eval.overlay_vae_maps`` is false,
        also every other VAE map (:func:`_vae_maps_at`), all on the same images;
        ``eval.overlays_per_group`` images per group (default 4).

        Args:
          eval_config: the ``config.eval`` mapping.
          produced: the names of the maps the producers will make, or ``None`` (unknown).
          **context: unused.

        Returns:
          The evaluator.

        Raises:
          ConfigError: ``eval.overlay_layer`` is not in ``eval.layers``, or (with
            ``produced``) one of the maps it shows is not produced.
        """
        layers = eval_layers(eval_config)
        layer = eval_config.get("overlay_layer") or (layers[0] if layers else None)
        if layer not in layers:
            raise validation.ConfigError(
                "eval.overlay_layer",
                f"{layer!r} is not one of eval.layers {list(layers)}: no map is computed for it",
            )
        references, criteria = eval_references(eval_config), eval_criteria(eval_config)
        shown = ["recon"] + [attention_map_name(c, r, layer) for c in criteria for r in references]
        if produced is not None and not set(shown) <= set(produced):
            raise validation.ConfigError(
                "eval.overlay_layer", f"overlays show {shown}; produced {list(produced)}"
            )
        if produced is not None and eval_config.get("overlay_vae_maps", True):
            shown += _vae_maps_at(produced, layer, exclude=shown)
        return [cls(shown=shown, per_group=eval_config.get("overlays_per_group", 4))]

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
        """Write one overlay figure per group unless ``ctx.figure_dir`` is ``None``.

        Args:
          ctx: the shared context (images, masks, groups, figure directory, title).
          maps: the produced maps by name; must include every name in ``shown``.

        Yields:
          ``("figures/overlay_<group>", path)`` per figure.

        Raises:
          ValueError: a shown map was not produced.
        """
        if ctx.figure_dir is None:
            return
        missing = [name for name in self.shown if name not in maps]
        if missing:
            raise ValueError(f"overlays: no map {missing} was produced; produced {list(maps)}")
        paths = save_overlays(
            ctx.figure_dir,
            ctx.test_images,
            ctx.masks,
            ctx.display_groups(),
            {name: maps[name] for name in self.shown},
            per_group=self.per_group,
            title=ctx.title,
        )
        for path in paths:
            yield f"figures/{path.stem}", str(path)


DEFAULT_EVALUATORS = ("localization", "latent_detection", "roc_figure", "overlays")


def _vae_maps_at(produced: Sequence[str], layer: str, *, exclude: Sequence[str]) -> list[str]:
    """The produced maps beyond recon and the paper's attention that the overlays show too:
    every map computed at no layer (input gradients, combinations, projection) or at the
    overlay ``layer`` (attention-weighted recon); not the model-free baselines, nor the
    attention maps (those shown are chosen by criterion and reference)."""
    baselines = baseline_kinds()
    return [
        n
        for n in produced
        if n not in exclude
        and n not in baselines
        and not n.startswith("attention_")
        and (not n.startswith("recon_x_attention") or n.endswith(f"_{layer}"))
    ]


def evaluators_from_config(
    eval_config: Mapping[str, Any], produced: Sequence[str] | None = None
) -> list[Evaluator]:
    """The evaluators an experiment's ``config.eval`` selects, in run order.

    ``eval.evaluators`` (default :data:`DEFAULT_EVALUATORS`) names registered kinds
    (:data:`EVALUATORS`); each class reads its own entries (``from_config``): ``max_fpr``,
    ``image_score`` (localization), ``references`` (latent detection), ``overlay_layer``,
    ``overlays_per_group``, ``criteria``, ``references`` (overlays; see
    :meth:`Overlays.from_config`).

    Args:
      eval_config: the ``config.eval`` mapping.
      produced: the map names the producers will make (the overlays check theirs against
        them and show the VAE maps among them), or ``None``.

    Returns:
      The evaluators, in ``eval.evaluators`` order.

    Raises:
      ConfigError: an unknown evaluator (``eval.evaluators``) or a bad entry, naming the
        field.
    """
    e = dict(eval_config)
    names = eval_names(e, "evaluators", DEFAULT_EVALUATORS)
    unknown = [name for name in names if name not in EVALUATORS]
    if unknown:
        raise validation.ConfigError(
            "eval.evaluators",
            f"unknown evaluator {unknown[0]!r}; choose from {sorted(EVALUATORS)}",
        )
    out: list[Evaluator] = []
    for name in names:
        out += EVALUATORS[name].from_config(e, produced=produced)
    return out


def collect(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Nest evaluator pairs into a results dict.

    Args:
      pairs: ``("section/item", value)`` pairs; a name without ``/`` sets a whole section.

    Returns:
      ``results[section][item] = value``; the ``"figures"`` section is the list of the
      paths in order (always present).
    """
    results: dict[str, Any] = {}
    for name, value in pairs:
        section, _, item = name.partition("/")
        if section == "figures":
            results.setdefault("figures", []).append(value)
        elif item:
            results.setdefault(section, {})[item] = value
        else:
            results[section] = value
    results.setdefault("figures", [])
    return results
