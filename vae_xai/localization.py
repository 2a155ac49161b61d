"""One-class VAE anomaly localization: training, anomaly maps over a dataset, evaluation.

The pieces behind the paper's localization tables (Liu et al., CVPR 2020, Tables 1-2), so
that the launchers in ``experiments/`` only parse flags and load data:

* **Training** (inside :func:`train_and_evaluate`): the ELBO on normal images only
  (:func:`vae_xai.train.vae_update_fn`, Gaussian likelihood by default), with optional
  on-device augmentation, for models with or without BatchNorm (its running averages live in
  ``state.model_state["batch_stats"]``), through :func:`vae_xai.train.train`.
* **Maps** (all ``(N, H, W)`` float32 NumPy at the input resolution, higher = more anomalous):
  :func:`reconstruction_error_maps` -- the "vanilla VAE" baseline, per-pixel squared error
  of the reconstruction at ``z = mu`` summed over channels; :func:`anomaly_attention_maps`
  -- the paper's anomaly attention (Sec. 3.3, Eq. 5) at a named encoder layer, averaged over
  the latent dims (Eq. 4) and bilinearly upsampled.
* **Evaluation** (:func:`localization_metrics`, :func:`evaluate_maps`): pooled pixel AUROC,
  best IoU, AUPRO (FPR <= 0.3) and image AUROC (image score = max of the map), overall and
  per defect type (a defect type's subset is its images plus every normal test image).
* **Figures** (:func:`save_overlays`, :func:`save_roc_figure`).

Models follow the convention of :mod:`vae_xai.models.resnet_vae` and
:mod:`vae_xai.models.ucsd_vae`: ``encode(x, train)`` returns named feature maps plus
``mu``/``logvar``; ``__call__(x, key, train)`` adds ``logits``; the image mean is
``sigmoid(logits)``. Every model input is ``(B, H, W, C)`` in [0, 1].
"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from data_pipelines import batching
from vae_xai import losses, metrics, plots, validation
from vae_xai import train as train_lib
from vae_xai import workdir as workdir_lib
from vae_xai.attention import (
    aggregate_attention,
    anomaly_attention,
    latent_kl_score,
    reference_statistics,
    upsample,
)
from vae_xai.encoder_split import split_encoder
from vae_xai.train import TrainState

# Scores differentiated by anomaly attention: the paper's Eq. 5 draw, or the per-latent KL
# divergence from the reference (vae_xai.attention.latent_kl_score).
ANOMALY_CRITERIA = ("difference", "kl")

# What the names in evaluate_one_class's results mean (copied into experiments' results.json).
RESULT_NAMES_NOTE = (
    "recon = per-pixel squared reconstruction error at z=mu (summed over channels); "
    "center_prior = a model-free map, minus the distance to the image centre (a floor); "
    "intensity (where computed) = another model-free map, the input's mean over channels; "
    "attention_<ref>_<layer> = anomaly attention (paper Eq. 5, sampled difference score) with "
    "the N(0,1) prior or the empirical training statistics as reference; "
    "attention_kl_<ref>_<layer> = the same maps with each latent's KL divergence from the "
    "reference as the score (our extension); image_auroc scores an image by the max of its map; "
    "latent_detection = image AUROC of the total latent KL from the reference (can the "
    "encoder tell anomalies apart at all?)."
)

Likelihood = Literal["gaussian", "bernoulli"]
AugmentFn = Callable[[jax.Array, jax.Array], jax.Array]

__all__ = [
    "anomaly_attention_maps",
    "attention_maps_for_layers",
    "check_config",
    "encoder_statistics",
    "evaluate_one_class",
    "epoch_batch_fn",
    "evaluate_maps",
    "image_scores",
    "intensity_maps",
    "init_state",
    "localization_metrics",
    "print_report",
    "reconstruction_error_maps",
    "reconstruction_nll",
    "reference_sets",
    "save_overlays",
    "save_results",
    "save_roc_figure",
    "summary_table",
    "train_and_evaluate",
    "variables_of",
]


# ----------------------------------------------------------------------------- training


reconstruction_nll = losses.reconstruction_nll
init_state = train_lib.init_state  # moved to vae_xai.train; kept here under its old name

# The keys of an experiment's ``config.train``: the ELBO's hyperparameters and the schedule.
TRAIN_KEYS = (
    "num_steps",
    "batch_size",
    "learning_rate",
    "beta",
    "likelihood",
    "variance",
    "checkpoint_every",
    "log_every",
)


def variables_of(state: TrainState) -> dict[str, Any]:
    """``{"params": ..., **model_state}``: the variables for ``model.apply`` in eval mode."""
    return {"params": state.params, **state.model_state}


def epoch_batch_fn(
    images: np.ndarray, batch_size: int, *, seed: int = 0
) -> Callable[[int], dict[str, np.ndarray]]:
    """``step -> {"image": (batch_size, H, W, C)}``, a deterministic function of ``step``.

    :func:`data_pipelines.batching.epoch_batch_fn` with each batch in index order (how the
    one-class launchers have always batched): epoch ``e`` visits the permutation of
    ``default_rng([seed, e])``; incomplete last batches are dropped.
    """
    return batching.epoch_batch_fn({"image": images}, batch_size, seed=seed, sort_within_batch=True)


def _train(
    model: Any,
    images: np.ndarray,
    *,
    workdir: str | pathlib.Path,
    num_steps: int,
    batch_size: int,
    learning_rate: float = 3e-4,
    beta: float = 1.0,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    augment: AugmentFn | None = None,
    seed: int = 0,
    checkpoint_every: int = 500,
    log_every: int = 50,
    progress: bool = True,
) -> tuple[TrainState, train_lib.TrainInfo]:
    """Adam on the ELBO of normal ``images`` ``(N, H, W, C)``, via :func:`vae_xai.train.train`."""
    images = np.asarray(images, np.float32)
    optimizer = optax.adam(learning_rate)
    state = train_lib.init_state(model, optimizer, images.shape[1:], seed=seed)
    update = train_lib.vae_update_fn(
        model, optimizer, beta=beta, likelihood=likelihood, variance=variance, augment=augment
    )
    return train_lib.train(
        state,
        update,
        epoch_batch_fn(images, batch_size, seed=seed),
        workdir=workdir,
        num_steps=num_steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        progress=progress,
    )


# ----------------------------------------------------------------------------- maps


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


def _check_images(images: ArrayLike) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"images must be a non-empty (N, H, W, C) array; got {images.shape}")
    return images


def encoder_statistics(
    model: Any, variables: Mapping[str, Any], images: ArrayLike, *, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``(mu, logvar)``, each ``(N, D)``, in eval mode (BatchNorm running stats)."""
    images = _check_images(images)

    @jax.jit
    def run(x):
        out = model.apply(variables, x, train=False, method="encode")
        return out["mu"], out["logvar"]

    mus, logvars = [], []
    for start, stop in _batches(len(images), batch_size):
        mu, logvar = run(_padded(images, start, stop, batch_size))
        mus.append(np.asarray(mu)[: stop - start])
        logvars.append(np.asarray(logvar)[: stop - start])
    return np.concatenate(mus), np.concatenate(logvars)


def reconstruction_error_maps(
    model: Any, variables: Mapping[str, Any], images: ArrayLike, *, batch_size: int = 32
) -> np.ndarray:
    """Per-pixel squared reconstruction error ``sum_c (x - sigmoid(logits(mu)))^2``, ``(N, H, W)``.

    The "vanilla VAE" baseline of the paper's tables: decode the posterior mean (no sampling,
    so the map is deterministic) in eval mode.
    """
    images = _check_images(images)

    @jax.jit
    def run(x):
        out = model.apply(variables, x, None, train=False)
        return jnp.sum(jnp.square(x - jax.nn.sigmoid(out["logits"])), axis=-1)

    maps = [
        np.asarray(run(_padded(images, s, e, batch_size)))[: e - s]
        for s, e in _batches(len(images), batch_size)
    ]
    return np.concatenate(maps).astype(np.float32)


def center_prior_maps(shape: tuple[int, int, int]) -> np.ndarray:
    """A model-free baseline map ``(N, H, W)``: minus the distance to the image centre.

    The same map for every image. It knows nothing about anomalies, only that they tend to
    lie near the middle of a centred object; its pixel AUROC is the floor a learned map has to
    beat to show it localizes anything (on MVTec-AD ``bottle`` at 128x128 it is 0.80).
    """
    n, h, w = (int(v) for v in shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dist = np.sqrt(np.square(yy - (h - 1) / 2) + np.square(xx - (w - 1) / 2))
    return np.broadcast_to(-dist, (n, h, w)).copy()


def intensity_maps(images: ArrayLike) -> np.ndarray:
    """A model-free baseline map ``(N, H, W)``: the input itself, averaged over channels.

    Grad-CAM maps are weighted sums of feature activations, so they are large wherever the
    features fire -- on MNIST, wherever there is ink. This map scores "brighter is more
    anomalous"; an attention map that does not beat it localizes no better than the ink does.
    """
    return _check_images(images).mean(axis=-1)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "center_prior": lambda images: center_prior_maps(images.shape[:3]),
    "intensity": intensity_maps,
}


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
    """Anomaly attention (paper Sec. 3.3) at encoder ``layer``, ``(N, H, W)`` float32.

    For each image: split the encoder at ``layer`` (eval mode), draw the latent scores from
    ``N(ref_mu - mu, ref_var + sigma^2)`` (Eq. 5; the mean ``ref_mu - mu`` if not ``sample``),
    take the per-latent Grad-CAM maps, average them over the latent dims (Eq. 4) and over
    ``num_samples`` independent draws, and upsample bilinearly to ``output_size`` (default
    the input's ``(H, W)``). ``ref_mu``/``ref_var`` are the N(0, 1) prior by default or the
    empirical statistics from :func:`vae_xai.attention.reference_statistics`. Batch ``b``
    uses ``fold_in(key, b)``, so the maps are reproducible for a given ``batch_size``.
    ``criterion="kl"`` differentiates each latent's KL divergence from the reference instead
    of the Eq. 5 draw (see :func:`vae_xai.attention.anomaly_attention`); it is deterministic.
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

    out = []
    for b, (start, stop) in enumerate(_batches(len(images), batch_size)):
        maps = run(_padded(images, start, stop, batch_size), jax.random.fold_in(key, b))
        out.append(np.asarray(maps)[: stop - start])
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------- evaluation


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


# ----------------------------------------------------------------------------- figures


def save_roc_figure(
    path: str | pathlib.Path,
    maps_by_name: Mapping[str, ArrayLike],
    masks: ArrayLike,
    *,
    title: str | None = None,
) -> pathlib.Path:
    """Pooled pixel ROC curves of several map types on one PNG."""
    masks = np.asarray(masks).astype(bool)
    curves = {}
    for name, maps in maps_by_name.items():
        fpr, tpr, _ = metrics.roc_curve(np.asarray(maps, np.float32), masks, drop_intermediate=True)
        curves[name] = (fpr, tpr, float(metrics.pixel_auroc(np.asarray(maps, np.float32), masks)))
    return plots.save_roc_curves(path, curves, title=title)


def save_overlays(
    folder: str | pathlib.Path,
    images: ArrayLike,
    masks: ArrayLike,
    groups: ArrayLike,
    maps_by_name: Mapping[str, ArrayLike],
    *,
    per_group: int = 4,
    prefix: str = "overlay",
    title: str | None = None,
) -> list[pathlib.Path]:
    """One PNG per group (defect type): rows input, mask, then each map over the input.

    Heat maps share one colour scale per map type over the whole test set (the 99.5th
    percentile), so that colours are comparable across images and defect types, as the
    pooled metrics are.
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    groups = np.asarray(groups).astype(str)
    vmax = {
        name: float(np.percentile(np.asarray(m), 99.5)) or 1.0 for name, m in maps_by_name.items()
    }
    paths = []
    for g in sorted(set(groups.tolist())):
        idx = np.flatnonzero(groups == g)[:per_group]
        rows: dict[str, list[np.ndarray]] = {
            "input": [images[i] for i in idx],
            "mask": [masks[i].astype(np.float32) for i in idx],
        }
        for name, maps in maps_by_name.items():
            maps = np.asarray(maps)
            rows[name] = [
                np.clip(plots.overlay(images[i], maps[i], vmax=vmax[name]), 0.0, 1.0) for i in idx
            ]
        paths.append(
            plots.save_image_rows(
                pathlib.Path(folder) / f"{prefix}_{g}.png",
                rows,
                col_titles=[str(i) for i in idx],
                title=f"{title + ': ' if title else ''}{g}",
            )
        )
    return paths


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
    """Anomaly attention maps ``(N, H, W)`` for every criterion, reference and layer.

    Keys: :func:`attention_map_name` (``"attention_<ref>_<layer>"`` for the paper's
    ``"difference"`` criterion, ``"attention_kl_<ref>_<layer>"`` for ``"kl"``).
    ``references`` maps a name (e.g. ``"prior"``, ``"empirical"``) to ``(ref_mu, ref_var)``.
    Every (reference, layer) pair uses the same ``key``, so they see the same noise draws.
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
    """The name of an anomaly attention map in results: ``attention[_kl]_<ref>_<layer>``."""
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

    ``"prior"``: N(0, 1). ``"empirical"``: the aggregate posterior of the (normal) training
    images in eval mode (:func:`vae_xai.attention.reference_statistics`).
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


def evaluate_one_class(
    model: Any,
    variables: Mapping[str, Any],
    *,
    train_images: ArrayLike,
    test_images: ArrayLike,
    masks: ArrayLike,
    labels: ArrayLike,
    groups: ArrayLike | None = None,
    layers: Sequence[str],
    references: Sequence[str] = ("prior", "empirical"),
    dense_after: Callable[[str], str | None] = lambda layer: None,
    sample: bool = True,
    num_samples: int = 1,
    criteria: Sequence[str] = ("difference",),
    batch_size: int = 16,
    seed: int = 0,
    max_fpr: float = 0.3,
    image_score: Literal["max", "mean"] = "max",
    figure_dir: str | pathlib.Path | None = None,
    overlay_layer: str | None = None,
    overlays_per_group: int = 4,
    title: str | None = None,
    baselines: Sequence[str] = ("center_prior",),
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Reconstruction-error and anomaly-attention maps on a test set, their metrics, figures.

    Map types: ``"recon"`` (:func:`reconstruction_error_maps`) and the anomaly attention
    ``"attention_<ref>_<layer>"`` (``"attention_kl_<ref>_<layer>"`` for the ``"kl"``
    criterion) for each criterion in ``criteria``, reference in ``references`` (``"prior"``,
    ``"empirical"``, see :func:`reference_sets`) and encoder layer in ``layers``.
    Attention noise comes from ``jax.random.key(seed)``. The model-free ``baselines``
    (names in :data:`BASELINES`: ``"center_prior"``, :func:`center_prior_maps`, and
    ``"intensity"``, :func:`intensity_maps`) are scored too, to calibrate the numbers: on
    object categories whose defects lie on a centred object the centre prior is far above
    chance, and Grad-CAM maps follow feature activity, which on MNIST is the ink.

    With ``figure_dir`` set, writes ``roc.png`` (pooled pixel ROC of every map type) and one
    ``overlay_<group>.png`` per group (``groups``, or normal/anomalous from ``labels``) with
    the input, mask, reconstruction error and the attention at ``overlay_layer`` (default:
    the first of ``layers``) for each reference.

    Returns:
      ``(results, maps)``: ``results = {"metrics": evaluate_maps(...),
      "latent_detection": latent_detection(...), "figures": [...], "eval_wall_s": float}``;
      ``maps`` the ``(N, H, W)`` maps by name.
    """
    t0 = time.perf_counter()
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline map {unknown[0]!r}; choose from {sorted(BASELINES)}")
    test_images = _check_images(test_images)
    maps = {
        "recon": reconstruction_error_maps(model, variables, test_images, batch_size=batch_size)
    }
    for name in baselines:
        maps[name] = BASELINES[name](test_images)
    refs = reference_sets(model, variables, train_images, references, batch_size=batch_size)
    maps.update(
        attention_maps_for_layers(
            model,
            variables,
            test_images,
            layers=layers,
            references=refs,
            key=jax.random.key(seed),
            dense_after=dense_after,
            sample=sample,
            num_samples=num_samples,
            criteria=criteria,
            batch_size=batch_size,
        )
    )
    results: dict[str, Any] = {
        "metrics": evaluate_maps(
            maps, masks, labels, groups, max_fpr=max_fpr, image_score=image_score
        ),
        "latent_detection": latent_detection(
            model, variables, test_images, labels, refs, groups, batch_size=batch_size
        ),
        "figures": [],
    }
    if figure_dir is not None:
        figure_dir = pathlib.Path(figure_dir)
        figs = [save_roc_figure(figure_dir / "roc.png", maps, masks, title=title)]
        layer = overlay_layer or layers[0]
        shown = {"recon": maps["recon"]}
        for criterion in criteria:
            for r in references:
                name = attention_map_name(criterion, r, layer)
                shown[name] = maps[name]
        if groups is None:
            groups = np.where(np.asarray(labels) > 0, "anomalous", "normal")
        figs += save_overlays(
            figure_dir,
            test_images,
            masks,
            groups,
            shown,
            per_group=overlays_per_group,
            title=title,
        )
        results["figures"] = [str(p) for p in figs]
    results["eval_wall_s"] = time.perf_counter() - t0
    return results, maps


EVAL_KEYS = (
    "layers",
    "references",
    "criteria",
    "baselines",
    "sample",
    "num_samples",
    "batch_size",
    "max_fpr",
    "image_score",
    "overlay_layer",
    "overlays_per_group",
)


def eval_kwargs(eval_config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`evaluate_one_class` keyword arguments from an experiment's ``config.eval``.

    Reads the keys in :data:`EVAL_KEYS`; a missing key keeps the function's default. An
    unknown key, or an ``overlay_layer`` that is not one of ``layers`` (no map would be
    computed for it), is a :class:`~vae_xai.validation.ConfigError`.
    """
    e = dict(eval_config)
    unknown = set(e) - set(EVAL_KEYS)
    if unknown:
        raise validation.ConfigError("eval", f"unknown eval config keys: {sorted(unknown)}")
    out: dict[str, Any] = {}
    for k in EVAL_KEYS:
        if k in e:
            value = e[k]
            out[k] = (
                tuple(value) if k in ("layers", "references", "criteria", "baselines") else value
            )
    layers = out.get("layers", ())
    if out.get("overlay_layer") is not None and out["overlay_layer"] not in layers:
        raise validation.ConfigError(
            "eval.overlay_layer",
            f"{out['overlay_layer']!r} is not one of eval.layers {list(layers)}: no map is "
            "computed for it",
        )
    return out


def check_config(model: Any, config: Any, input_shape: Sequence[int]) -> None:
    """Validate a one-class experiment config (``seed``, ``train``, ``eval``) before any work.

    ``train`` holds keys of :data:`TRAIN_KEYS` (the ELBO and schedule) with
    ``num_steps >= 1`` and positive periods, batch size and learning rate; ``eval`` is read
    by :func:`eval_kwargs` and its ``layers`` must be ``(B, h, w, c)`` feature maps of
    ``model.encode`` (checked by a shape-only trace on inputs ``(1, *input_shape)``).
    Raises :class:`~vae_xai.validation.ConfigError` naming the field.
    """
    v = validation
    train_keys = set(TRAIN_KEYS)
    unknown = set(config.train.keys()) - train_keys
    if unknown:
        raise v.ConfigError("train", f"unknown keys {sorted(unknown)}; known: {sorted(train_keys)}")
    v.at_least(config, "train.num_steps", 1)
    v.positive(config, "train.learning_rate")
    v.at_least(config, "train.batch_size", 1)
    v.at_least(config, "train.checkpoint_every", 1)
    v.at_least(config, "train.log_every", 1)
    if "likelihood" in config.train:
        v.one_of(config, "train.likelihood", ("gaussian", "bernoulli"))
    unknown = set(config.eval.keys()) - set(EVAL_KEYS)
    if unknown:
        raise v.ConfigError("eval", f"unknown eval config keys: {sorted(unknown)}")
    v.non_empty(config, "eval.layers")
    v.model_layers(model, input_shape, tuple(config.eval.layers), "eval.layers", train=False)
    kw = eval_kwargs(config.eval)  # overlay_layer among the layers
    if "references" in kw:
        v.subset(config, "eval.references", ("prior", "empirical"))
    if "criteria" in kw:
        v.subset(config, "eval.criteria", ANOMALY_CRITERIA)
    if "baselines" in kw:
        v.subset(config, "eval.baselines", tuple(BASELINES), allow_empty=True)
    for key in ("batch_size", "num_samples", "overlays_per_group"):
        if key in kw:
            v.at_least(config, f"eval.{key}", 1)
    if "image_score" in kw:
        v.one_of(config, "eval.image_score", ("max", "mean"))
    if "max_fpr" in kw and not 0 < kw["max_fpr"] <= 1:
        raise v.ConfigError("eval.max_fpr", f"must be in (0, 1]; got {kw['max_fpr']!r}")


def train_and_evaluate(
    model: Any,
    config: Any,
    *,
    run: workdir_lib.Run,
    train_images: ArrayLike,
    test: Mapping[str, ArrayLike],
    dense_after: Callable[[str], str | None] = lambda layer: None,
    augment: AugmentFn | None = None,
    title: str | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any], workdir_lib.Evaluation]:
    """What every one-class launcher does: train (or resume) on ``train_images``, evaluate.

    ``config`` is an experiment config with ``seed``, ``train`` (keys of
    :data:`TRAIN_KEYS`; Adam on the ELBO through :func:`vae_xai.train.train`) and ``eval``
    (read by :func:`eval_kwargs`), already checked by :func:`check_config`; ``run`` is the
    started run of the workdir (:func:`vae_xai.workdir.start`). ``test`` holds ``"image"``,
    ``"mask"``, ``"label"`` and optionally ``"defect"`` (the per-image group for per-defect
    metrics). Figures go to the evaluation's own folder
    (``workdir/evaluations/step<N>_<hash>/figures``).

    Returns:
      ``(train_info, evaluation_results, evaluation)`` from :func:`vae_xai.train.train`,
      :func:`evaluate_one_class` and :meth:`vae_xai.workdir.Run.evaluation`; the launcher
      adds its fields and calls ``evaluation.save_results(results)``.
    """
    kw = eval_kwargs(config.eval)
    state, train_info = _train(
        model,
        train_images,
        workdir=run.workdir,
        augment=augment,
        seed=config.seed,
        progress=progress,
        **(config.train.to_dict() if hasattr(config.train, "to_dict") else dict(config.train)),
    )
    evaluation = run.evaluation(run.eval_config(config), step=train_info["steps"])
    results, _ = evaluate_one_class(
        model,
        variables_of(state),
        train_images=train_images,
        test_images=test["image"],
        masks=test["mask"],
        labels=test["label"],
        groups=test.get("defect"),
        dense_after=dense_after,
        seed=config.seed,
        figure_dir=evaluation.dir / "figures",
        title=None if title is None else f"{title}, {train_info['steps']} steps",
        **kw,
    )
    return train_info, results, evaluation


def save_results(evaluation: workdir_lib.Evaluation, results: Mapping[str, Any]) -> dict[str, Any]:
    """Write a launcher's results to the evaluation's ``results.json`` (atomically, with the
    run's identity and the evaluation's config) and link it as ``workdir/results.json``;
    returns what was written (see :meth:`vae_xai.workdir.Evaluation.save_results`)."""
    return evaluation.save_results(results)


def print_report(results: Mapping[str, Any], path: str | pathlib.Path) -> None:
    """Print a one-class launcher's :func:`summary_table` and where its results.json is."""
    print(summary_table(results["metrics"], results["latent_detection"]))
    print(f"results: {path}")


def summary_table(
    metrics_by_map: Mapping[str, Mapping[str, Any]],
    latent_detection: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """A plain-text table of the overall metrics of each map type (for logs).

    With ``latent_detection`` (from :func:`latent_detection`), one more line per reference
    gives the image AUROC of the latent code's KL score.
    """
    cols = ("pixel_auroc", "best_iou", "aupro", "image_auroc")
    width = max(len(n) for n in metrics_by_map) + 2
    lines = ["map".ljust(width) + "".join(c.rjust(13) for c in cols)]
    for name, entry in metrics_by_map.items():
        vals = entry["overall"]
        cells = ["-" if vals[c] is None else f"{vals[c]:.4f}" for c in cols]
        lines.append(name.ljust(width) + "".join(c.rjust(13) for c in cells))
    for name, entry in (latent_detection or {}).items():
        auroc = entry["overall"]
        lines.append(
            f"image AUROC of the latent {name} score: {'-' if auroc is None else f'{auroc:.4f}'}"
        )
    return "\n".join(lines)
