"""The one config-argument parser every ``get_config(arg)`` uses, and what its variants mean.

``--config=experiments/configs/NAME.py[:arg]`` hands ``arg`` to ``get_config``. Every config
spells it the same way, ``[option,]variant``, and every variant means the same thing:

* ``smoke`` -- seconds, for tests: every code path runs, the numbers mean nothing.
* ``cpu`` -- fits a 2-core CPU in about 30 minutes or less (one seed): a reduced-compute
  run whose numbers are reported as such in RESULTS.md.
* ``full`` -- the paper's setting (or our best reading of it), for an accelerator.

A config may add variants of its own (dSprites' ``cpu_long``: hours on a CPU) and names its
default. ``option`` is a leading choice some configs need (dSprites' method:
``ad_factorvae,cpu``).

Every config has one schema: ``seed``, ``variant`` and what selects the data (``image_size``,
``normal_digit``, ...) at the top; ``model``, ``train`` (the schedule ``num_steps``,
``batch_size``, ``checkpoint_every``, ``log_every`` and the loss and optimizer settings) and
``eval`` as sections; an experiment's own sections besides (``anomaly``, ``augment``, ``ad``,
``disc``, ``optim``, ``figure``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

__all__ = ["CANONICAL", "Variant", "parse_variant"]

# What every config's variants mean (module docstring).
CANONICAL = {
    "smoke": "seconds, for tests",
    "cpu": "fits a 2-core CPU in about 30 minutes or less",
    "full": "the paper's setting, for an accelerator",
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A parsed config argument.

    Attributes:
      name: the variant (``smoke``, ``cpu``, ``full`` or one the config adds).
      option: the leading option (dSprites' method), or ``None`` for configs without one.
    """

    name: str
    option: str | None = None


def parse_variant(
    arg: str | None,
    *,
    variants: Sequence[str],
    default: str,
    options: Sequence[str] | None = None,
    default_option: str | None = None,
    config: str = "config",
) -> Variant:
    """Parse ``get_config``'s ``arg``: ``"variant"``, or ``"option[,variant]"`` with ``options``.

    Args:
      arg: what follows ``:`` in ``--config=PATH:arg`` (``None`` or ``""``: the defaults).
      variants: the canonical variants this config has (normally ``smoke``, ``cpu``, ``full``).
      default: the variant when none is given.
      options: the valid leading options (e.g. methods); ``None`` when the config has none.
      default_option: the option when ``arg`` is empty.
      config: the config's name, for error messages.

    Returns:
      The parsed :class:`Variant`.

    Raises:
      ValueError: an unknown option or variant (the message lists the valid ones), or more
        than one variant.
    """
    if default not in variants:
        raise ValueError(f"{config}: default variant {default!r} is not one of {list(variants)}")
    parts = [p.strip() for p in (arg or "").split(",") if p.strip()]
    option = None
    if options is not None:
        option = default_option
        if parts and parts[0] not in variants:
            option = parts.pop(0)
        if option not in options:
            raise ValueError(
                f"{config}: unknown option {option!r} in {arg!r}; choose one of {list(options)} "
                f"(spelled OPTION[,VARIANT])"
            )
    if len(parts) > 1:
        raise ValueError(f"{config}: choose one variant; got {parts} in {arg!r}")
    given = parts[0] if parts else None
    name = default if given is None else given
    if name not in variants:
        valid = ", ".join(repr(v) for v in variants)
        raise ValueError(f"{config}: unknown variant {given!r}; valid variants are {valid}")
    return Variant(name=name, option=option)


def vae_maps_eval() -> dict:
    """The ``config.eval`` entries of the VAE anomaly maps beyond the paper
    (:mod:`vae_xai.localization.vae_maps`), shared by the localization configs: every map
    (``maps``), the reconstruction error smoothed with Zimmerer et al.'s kernel (8 -> 7,
    sigma 3) and the SSIM residual (window 11, sigma 1.5; raw and smoothed), input gradients
    at ``z = mu`` with the same smoothing, combinations normalized over the test set, 100
    projection steps of size 0.05 with lambda 1, and the attention as a weight on the
    reconstruction error at every evaluated layer. A config overrides single entries after
    calling this."""
    return dict(
        maps=(
            "recon_smooth",
            "ssim",
            "ssim_smooth",
            "grad_elbo",
            "grad_kl",
            "grad_rec",
            "combi",
            "combi_add",
            "projection",
            "attention_x_recon",
        ),  # fmt: skip
        grad=dict(num_samples=0, channel_reduce="sum", smooth_kernel=8, smooth_sigma=3.0),
        combi=dict(normalize_on="test", max_norm_images=256),
        projection=dict(
            steps=100,
            step_size=0.05,
            lam=1.0,
            kl_weight=0.0,
            threshold=0.0,
            clip=True,
            channel_reduce="sum",
        ),  # fmt: skip
        attention_x_recon=dict(variants=("difference", "kl", "released"), layers=None),
        residual=dict(smooth_kernel=8, smooth_sigma=3.0, ssim_window=11, ssim_sigma=1.5),
    )
