"""One-class VAE anomaly localization (Liu et al., CVPR 2020, Tables 1-2).

The pieces behind the paper's localization tables, so that the launchers only parse flags
and load data. Split along what each piece does:

* :mod:`~vae_xai.localization.maps` -- anomaly maps ``(N, H, W)`` over a test set
  (reconstruction error; anomaly attention, Sec. 3.3 Eq. 5, per criterion x reference x
  layer; the model-free baselines ``center_prior`` and ``intensity``) and their
  **producers**, registered by name (:data:`PRODUCERS`) and selected by ``config.eval``.
* :mod:`~vae_xai.localization.vae_maps` -- VAE maps beyond the paper, as pure functions of
  ``encode_fn``/``decode_fn`` (any Linen or NNX VAE) and as producers selected by
  ``config.eval.maps``: input gradients of the ELBO / KL / reconstruction term and their
  combinations with the reconstruction error (Zimmerer et al., MICCAI 2019), iterative
  energy-based projection (Dehaene et al., ICLR 2020), attention-weighted reconstruction error,
  the smoothed reconstruction error and the SSIM residual (:mod:`~vae_xai.localization.ssim`;
  Bergmann et al.'s AE-SSIM, VISAPP 2019).
* :mod:`~vae_xai.localization.evaluators` -- **evaluators** over the produced maps
  (localization metrics: pooled pixel AUROC, best IoU, AUPRO, image AUROC, overall and per
  defect type; latent detection; ROC figure; overlays), each a small object with a uniform
  ``run(ctx, maps)`` yielding ``(name, value)`` (big_vision's ``evaluators/`` shape).
* :mod:`~vae_xai.localization.figures`, :mod:`~vae_xai.localization.report` -- the PNGs;
  the text table and results.json.
* :mod:`~vae_xai.localization.one_class` -- :func:`train_on_normal` (train through
  :func:`vae_xai.train.train`), :func:`evaluate_test_set` (produce and evaluate the maps
  that ``config.eval`` selects), :func:`check_config` (builds the
  producers and evaluators before any work), :func:`evaluate_one_class` (keyword form).

Models follow the convention of :mod:`vae_xai.models.resnet_vae` and
:mod:`vae_xai.models.ucsd_vae`: ``encode(x, train)`` returns named feature maps plus
``mu``/``logvar``; ``__call__(x, key, train)`` adds ``logits``; the image mean is
``sigmoid(logits)``. Every model input is ``(B, H, W, C)`` in [0, 1].
"""

from __future__ import annotations

from vae_xai.localization.evaluators import (
    DEFAULT_EVALUATORS,
    EVALUATORS,
    Evaluator,
    LatentDetection,
    LocalizationMetrics,
    Overlays,
    RocFigure,
    collect,
    evaluate_maps,
    evaluators_from_config,
    group_subsets,
    image_scores,
    latent_detection,
    localization_metrics,
    register_evaluator,
)
from vae_xai.localization.figures import save_overlays, save_roc_figure
from vae_xai.localization.maps import (
    ANOMALY_CRITERIA,
    PRODUCERS,
    REFERENCES,
    AnomalyAttention,
    CenterPrior,
    Context,
    Intensity,
    MapProducer,
    ReconstructionError,
    anomaly_attention_maps,
    attention_map_name,
    attention_maps_for_layers,
    center_prior_maps,
    encoder_statistics,
    intensity_maps,
    reconstruction_error_maps,
    reference_sets,
    register_producer,
)
from vae_xai.localization.one_class import (
    EVAL_KEYS,
    TRAIN_KEYS,
    check_config,
    evaluate,
    evaluate_one_class,
    evaluate_test_set,
    from_config,
    train_on_normal,
    variables_of,
)
from vae_xai.localization.producers import producers_from_config
from vae_xai.localization.report import (
    RESULT_NAMES_NOTE,
    print_report,
    save_results,
    summary_table,
)
from vae_xai.localization.ssim import ssim_map, ssim_residual
from vae_xai.localization.vae_maps import (
    MAP_NAMES,
    AttentionWeightedRecon,
    EnergyProjection,
    GradientCombination,
    InputGradient,
    ReconstructionResidual,
    ReleasedAttention,
    additive_combination,
    input_gradient_maps,
    input_gradients,
    model_fns,
    product_combination,
    project,
    projection_maps,
    reconstruction_residual,
    released_attention_maps,
    residual_maps,
    set_range,
    smooth_maps,
)
from vae_xai.losses import reconstruction_nll

__all__ = [
    "ANOMALY_CRITERIA",
    "DEFAULT_EVALUATORS",
    "EVALUATORS",
    "EVAL_KEYS",
    "MAP_NAMES",
    "PRODUCERS",
    "REFERENCES",
    "RESULT_NAMES_NOTE",
    "TRAIN_KEYS",
    "AnomalyAttention",
    "AttentionWeightedRecon",
    "CenterPrior",
    "Context",
    "EnergyProjection",
    "Evaluator",
    "GradientCombination",
    "InputGradient",
    "Intensity",
    "LatentDetection",
    "LocalizationMetrics",
    "MapProducer",
    "Overlays",
    "ReconstructionError",
    "ReconstructionResidual",
    "ReleasedAttention",
    "RocFigure",
    "additive_combination",
    "anomaly_attention_maps",
    "attention_map_name",
    "attention_maps_for_layers",
    "center_prior_maps",
    "check_config",
    "collect",
    "encoder_statistics",
    "evaluate",
    "evaluate_maps",
    "evaluate_one_class",
    "evaluate_test_set",
    "evaluators_from_config",
    "from_config",
    "group_subsets",
    "image_scores",
    "input_gradient_maps",
    "input_gradients",
    "intensity_maps",
    "latent_detection",
    "localization_metrics",
    "model_fns",
    "print_report",
    "producers_from_config",
    "product_combination",
    "project",
    "projection_maps",
    "reconstruction_residual",
    "reconstruction_error_maps",
    "reconstruction_nll",
    "reference_sets",
    "register_evaluator",
    "register_producer",
    "released_attention_maps",
    "residual_maps",
    "save_overlays",
    "save_results",
    "save_roc_figure",
    "set_range",
    "smooth_maps",
    "ssim_map",
    "ssim_residual",
    "summary_table",
    "train_on_normal",
    "variables_of",
]
