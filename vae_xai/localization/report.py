"""Reporting a one-class evaluation: the note on result names, a text table, results.json."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

from vae_xai import workdir as workdir_lib

__all__ = ["RESULT_NAMES_NOTE", "print_report", "save_results", "summary_table"]

# What the names in evaluate_one_class's results mean (copied into experiments' results.json).
RESULT_NAMES_NOTE = (
    "recon = per-pixel squared reconstruction error at z=mu (summed over channels); "
    "recon_smooth = recon Gaussian-smoothed (Zimmerer et al.'s kernel 8 -> 7, sigma 3); "
    "ssim = 1 - SSIM(x, f(x)) at z=mu (11x11 Gaussian window, sigma 1.5, channels averaged; "
    "the residual of Bergmann et al.'s AE-SSIM); ssim_smooth = ssim smoothed like recon_smooth; "
    "center_prior = a model-free map, minus the distance to the image centre (a floor); "
    "intensity (where computed) = another model-free map, the input's mean over channels; "
    "attention_<ref>_<layer> = anomaly attention (paper Eq. 5, sampled difference score) with "
    "the N(0,1) prior or the empirical training statistics as reference; "
    "attention_kl_<ref>_<layer> = the same maps with each latent's KL divergence from the "
    "reference as the score (our extension); image_auroc scores an image by the max of its map; "
    "latent_detection = image AUROC of the total latent KL from the reference (can the "
    "encoder tell anomalies apart at all?); "
    "grad_elbo / grad_kl / grad_rec = |d loss / d x| of the ELBO, its KL term or its "
    "reconstruction term at z=mu, channels summed, Gaussian-smoothed (Zimmerer et al. 2019); "
    "combi = the KL-gradient map min-max normalized over the whole test set times recon; "
    "combi_add = the sum of the KL-gradient map and recon, each normalized over the set; "
    "projection = |x0 - x_T| after T steps of energy-based projection (Dehaene et al. 2020); "
    "recon_x_<attention map> = that attention map, normalized over the set, times recon "
    "(attention_released_<layer>: the authors' released-code attention variant); "
    "map_cost = each map's wall time on its own (jit compilation and the maps it reuses "
    "included) and per test image."
)


def save_results(evaluation: workdir_lib.Evaluation, results: Mapping[str, Any]) -> dict[str, Any]:
    """Write a launcher's results to the evaluation's ``results.json``.

    Atomically, with the run's identity and the evaluation's config, and linked as
    ``workdir/results.json`` (see :meth:`vae_xai.workdir.Evaluation.save_results`).

    Args:
      evaluation: the evaluation folder.
      results: the launcher's results.

    Returns:
      What was written.
    """
    return evaluation.save_results(results)


def print_report(results: Mapping[str, Any], path: str | pathlib.Path) -> None:
    """Print a one-class launcher's :func:`summary_table` and where its results.json is.

    Args:
      results: the results (``metrics``, optionally ``latent_detection``).
      path: the results.json path printed.
    """
    print(summary_table(results.get("metrics", {}), results.get("latent_detection")))
    print(f"results: {path}")


def summary_table(
    metrics_by_map: Mapping[str, Mapping[str, Any]],
    latent_detection: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """A plain-text table of the overall metrics of each map type (for logs).

    Args:
      metrics_by_map: ``results["metrics"]``
        (:func:`~vae_xai.localization.evaluators.evaluate_maps`).
      latent_detection: ``results["latent_detection"]``
        (:func:`~vae_xai.localization.evaluators.latent_detection`); one more line per reference
        gives the image AUROC of the latent code's KL score.

    Returns:
      The table, one line per map.
    """
    cols = ("pixel_auroc", "best_iou", "aupro", "image_auroc")
    width = max((len(n) for n in metrics_by_map), default=3) + 2
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
