"""Map producers from an experiment's ``config.eval``: the paper's maps and the VAE maps.

Above both :mod:`~vae_xai.localization.maps` (the reconstruction error, the paper's anomaly
attention, the model-free baselines) and :mod:`~vae_xai.localization.vae_maps` (input
gradients, combinations, projection, attention-weighted reconstruction error), so that
neither imports the other to build the full list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vae_xai import validation
from vae_xai.localization import vae_maps
from vae_xai.localization.maps import (
    ANOMALY_CRITERIA,
    BASELINES,
    PRODUCERS,
    REFERENCES,
    AnomalyAttention,
    MapProducer,
    ReconstructionError,
)

__all__ = ["producers_from_config"]


def producers_from_config(eval_config: Mapping[str, Any]) -> list[MapProducer]:
    """The producers an experiment's ``config.eval`` selects, in results order.

    ``"recon"``, then each of ``baselines`` (default ``("center_prior",)``), then anomaly
    attention for each ``criteria`` (default ``("difference",)``) x ``references`` (default
    ``("prior", "empirical")``) x ``layers``, with ``sample``/``num_samples``, then the maps
    that ``maps`` names (:func:`vae_xai.localization.vae_maps.producers_from_config`: input
    gradients, their combinations, energy projection, attention-weighted reconstruction
    error). An unknown name or bad field is a :class:`~vae_xai.validation.ConfigError`
    naming the field.
    """
    e = dict(eval_config)
    baselines = tuple(e.get("baselines", ("center_prior",)))
    criteria = tuple(e.get("criteria", ("difference",)))
    references = tuple(e.get("references", REFERENCES))
    layers = tuple(e.get("layers", ()))
    for field, names, known in (
        ("eval.baselines", baselines, tuple(BASELINES)),
        ("eval.criteria", criteria, ANOMALY_CRITERIA),
        ("eval.references", references, REFERENCES),
    ):
        for name in names:
            if name not in known:
                raise validation.ConfigError(
                    field, f"unknown map producer {name!r}; choose from {sorted(known)}"
                )
    sample = bool(e.get("sample", True))
    num_samples = int(e.get("num_samples", 1))
    out: list[MapProducer] = [ReconstructionError()]
    out += [PRODUCERS[name]() for name in baselines]
    out += [
        AnomalyAttention(c, r, layer, sample=sample, num_samples=num_samples)
        for c in criteria
        for r in references
        for layer in layers
    ]
    out += vae_maps.producers_from_config(e)
    return out
