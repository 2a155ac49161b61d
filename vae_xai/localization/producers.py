"""Map producers from an experiment's ``config.eval``: the paper's maps and the VAE maps.

Above both :mod:`~vae_xai.localization.maps` (the reconstruction error, the paper's anomaly
attention, the model-free baselines) and :mod:`~vae_xai.localization.vae_maps` (input
gradients, combinations, projection, attention-weighted reconstruction error), so that
neither imports the other to build the full list. Each producer class reads its own entries
(``from_config``) and checks them in its constructor; this module only fixes the order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vae_xai.localization import vae_maps
from vae_xai.localization.maps import PRODUCERS, MapProducer, eval_baselines

__all__ = ["producers_from_config"]


def producers_from_config(eval_config: Mapping[str, Any]) -> list[MapProducer]:
    """The producers an experiment's ``config.eval`` selects, in results order.

    ``"recon"``, then each of ``eval.baselines`` (default ``("center_prior",)``; the
    registered kinds with ``baseline = True``), then anomaly attention for each
    ``eval.criteria`` (default ``("difference",)``) x ``eval.references`` (default
    ``("prior", "empirical")``) x ``eval.layers``, with ``eval.sample``/``eval.num_samples``
    (:meth:`~vae_xai.localization.maps.AnomalyAttention.from_config`), then the maps that
    ``eval.maps`` names (:func:`vae_xai.localization.vae_maps.producers_from_config`: input
    gradients, their combinations, energy projection, attention-weighted reconstruction
    error).

    Args:
      eval_config: the ``config.eval`` mapping (a ``ConfigDict`` or a dict).

    Returns:
      The producers; their ``name`` s are the keys of the maps in results.

    Raises:
      ConfigError: an unknown name or a bad entry, naming the field (e.g.
        ``eval.baselines``, ``eval.num_samples``).
    """
    e = dict(eval_config)
    out: list[MapProducer] = PRODUCERS["recon"].from_config(e)
    for kind in eval_baselines(e):
        out += PRODUCERS[kind].from_config(e)
    out += PRODUCERS["attention"].from_config(e)
    out += vae_maps.producers_from_config(e)
    return out
