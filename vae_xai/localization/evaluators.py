"""Evaluators over produced maps (big_vision's ``evaluators/`` shape).

An evaluator is a small object built by name from ``config.eval`` entries
(:func:`evaluators_from_config`, registry :data:`EVALUATORS`) with one uniform
``run(ctx, maps)`` that yields ``(name, value)`` pairs; ``name`` is ``"<section>/<item>"``
and :func:`collect` nests the pairs into a results dict (``results[section][item] = value``;
the ``"figures"`` section is the list of written paths):

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
    encoder_statistics,
)


def image_scores(maps: ArrayLike, *, reduce: Literal["max", "mean"] = "max") -> np.ndarray:
    """Per-image anomaly scores ``(N,)`` from maps ``(N, H, W)``: their max (or mean)."""
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
      image_score: how a map becomes an image score for the image AUROC.

    Returns:
      ``{"pixel_auroc", "best_iou", "aupro", "image_auroc", "n_images", "n_anomalous"}``;
      a metric that is undefined on this set (no anomalous pixels, or a single image class)
      is ``None``.
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

    ``groups`` ``(N,)`` names each image's defect type. The subset of a defect type is its
    own images plus all normal (``label == 0``) images, so every metric, including the image
    AUROC, is defined per type; groups with only normal images are skipped.

    Returns:
      ``{name: {"overall": metrics, "per_defect": {group: metrics}}}``.
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

    Groups are the names in ``groups`` of images with ``label != 0``, sorted; a group that
    names only normal images (e.g. ``"good"``) gets no subset.
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

    Returns:
      ``{"kl_<ref>": {"overall": auroc, "per_defect": {group: auroc}}}`` (``per_defect`` only
      with ``groups``; each group's images plus all normal ones).
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

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs: ...


EVALUATORS: dict[str, type] = {}


def register_evaluator(kind: str) -> Callable[[type], type]:
    """Class decorator: make an evaluator buildable by ``kind`` (:data:`EVALUATORS`)."""

    def register(cls: type) -> type:
        if kind in EVALUATORS:
            raise ValueError(f"evaluator {kind!r} is already registered")
        EVALUATORS[kind] = cls
        cls.kind = kind
        return cls

    return register


@register_evaluator("localization")
class LocalizationMetrics:
    """:func:`evaluate_maps` of every map: yields ``("metrics/<map>", entry)``."""

    def __init__(self, *, max_fpr: float = 0.3, image_score: Literal["max", "mean"] = "max"):
        if not 0 < max_fpr <= 1:
            raise ValueError(f"max_fpr must be in (0, 1]; got {max_fpr!r}")
        if image_score not in ("max", "mean"):
            raise ValueError(f'image_score must be "max" or "mean"; got {image_score!r}')
        self.max_fpr = max_fpr
        self.image_score = image_score

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
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
    """:func:`latent_detection` per reference: yields ``("latent_detection/kl_<ref>", entry)``."""

    def __init__(self, *, references: Sequence[str] = REFERENCES):
        self.references = tuple(references)

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
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

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
        if ctx.figure_dir is None:
            return
        path = save_roc_figure(
            pathlib.Path(ctx.figure_dir) / "roc.png", maps, ctx.masks, title=ctx.title
        )
        yield "figures/roc", str(path)


@register_evaluator("overlays")
class Overlays:
    """One ``overlay_<group>.png`` per group (:func:`save_overlays`) of the maps ``shown``."""

    def __init__(self, *, shown: Sequence[str], per_group: int = 4):
        if per_group < 1:
            raise ValueError(f"per_group must be >= 1; got {per_group!r}")
        self.shown = tuple(shown)
        self.per_group = per_group

    def run(self, ctx: Context, maps: Mapping[str, np.ndarray]) -> Pairs:
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
    return [
        n
        for n in produced
        if n not in exclude
        and n not in ("center_prior", "intensity")
        and not n.startswith("attention_")
        and (not n.startswith("recon_x_attention") or n.endswith(f"_{layer}"))
    ]


def evaluators_from_config(
    eval_config: Mapping[str, Any], produced: Sequence[str] | None = None
) -> list[Evaluator]:
    """The evaluators an experiment's ``config.eval`` selects, in run order.

    ``evaluators`` (default :data:`DEFAULT_EVALUATORS`) names them; their entries:
    ``max_fpr``, ``image_score`` (localization), ``references`` (latent detection),
    ``overlay_layer`` (default the first of ``layers``; must be one of them),
    ``overlays_per_group``, ``criteria`` and ``references`` (overlays show ``recon`` and the
    attention at ``overlay_layer`` for each criterion x reference, and with ``produced``,
    unless ``overlay_vae_maps`` is false, every other VAE map: the input gradients,
    combinations, projection, and the attention-weighted recon at ``overlay_layer``, all on
    the same images). ``produced``: the map
    names the producers will make (checked against the overlays' maps). An unknown evaluator
    or a bad entry is a :class:`~vae_xai.validation.ConfigError` naming the field.
    """
    e = dict(eval_config)
    names = tuple(e.get("evaluators", DEFAULT_EVALUATORS))
    for name in names:
        if name not in EVALUATORS:
            raise validation.ConfigError(
                "eval.evaluators", f"unknown evaluator {name!r}; choose from {sorted(EVALUATORS)}"
            )
    layers = tuple(e.get("layers", ()))
    references = tuple(e.get("references", REFERENCES))
    criteria = tuple(e.get("criteria", ("difference",)))
    out: list[Evaluator] = []
    for name in names:
        try:
            if name == "localization":
                out.append(
                    LocalizationMetrics(
                        max_fpr=e.get("max_fpr", 0.3), image_score=e.get("image_score", "max")
                    )
                )
            elif name == "latent_detection":
                out.append(LatentDetection(references=references))
            elif name == "overlays":
                layer = e.get("overlay_layer") or (layers[0] if layers else None)
                if layer not in layers:
                    raise validation.ConfigError(
                        "eval.overlay_layer",
                        f"{layer!r} is not one of eval.layers {list(layers)}: no map is "
                        "computed for it",
                    )
                shown = ["recon"] + [
                    attention_map_name(c, r, layer) for c in criteria for r in references
                ]
                if produced is not None and not set(shown) <= set(produced):
                    raise validation.ConfigError(
                        "eval.overlay_layer", f"overlays show {shown}; produced {list(produced)}"
                    )
                if produced is not None and e.get("overlay_vae_maps", True):
                    shown += _vae_maps_at(produced, layer, exclude=shown)
                out.append(Overlays(shown=shown, per_group=e.get("overlays_per_group", 4)))
            else:
                out.append(EVALUATORS[name]())
        except validation.ConfigError:
            raise
        except ValueError as err:
            raise validation.ConfigError(f"eval ({name} evaluator)", str(err)) from err
    return out


def collect(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Nest evaluator pairs: ``"section/item"`` -> ``results[section][item]``; the
    ``"figures"`` section is a list of the paths in order (always present)."""
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
