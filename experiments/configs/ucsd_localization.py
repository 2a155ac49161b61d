"""UCSD Ped1 anomaly localization ablation (paper Table 1).

Reconstruction vs attention at conv1/conv2/conv3 of a three-conv VAE on 100x100 grayscale
frames. ``get_config(arg)`` with ``arg`` one of (:mod:`experiments.configs.common`):

* ``None`` / ``"full"`` -- 100x100 frames, channels (32, 64, 128), fc 512, latent 32,
  Gaussian likelihood (``variance=0.5``: loss = SSE + KL), Adam 3e-4, batch 64, 20,000 steps
  (~190 epochs of the 6,800 training frames). No augmentation (fixed camera). The paper does
  not give the step count, widths or learning rate: these are our choices.
* ``"cpu"`` -- a CPU run: 3,000 steps at batch 32, Adam 1e-3.
* ``"smoke"`` -- seconds-long test config (28x28 frames, a few channels, 2 steps).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import parse_variant

VARIANTS = ("smoke", "cpu", "full")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Build the ucsd_localization config.

    Args:
      arg: what follows ``:`` in ``--config=PATH:arg``: ``smoke``, ``cpu`` or ``full``,
        default ``full``; see the module doc.

    Returns:
      The config.

    Raises:
      ValueError: an unknown variant (:func:`experiments.configs.common.parse_variant`).
    """
    variant = parse_variant(arg, variants=VARIANTS, default="full", config="ucsd_localization").name
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.image_size = 100
    c.model = ml_collections.ConfigDict(dict(channels=(32, 64, 128), hidden=512, latent_dim=32))
    c.train = ml_collections.ConfigDict(
        dict(
            num_steps=20_000,
            batch_size=64,
            learning_rate=3e-4,
            beta=1.0,
            likelihood="gaussian",
            variance=0.5,
            checkpoint_every=1_000,
            log_every=100,
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            layers=("conv1", "conv2", "conv3"),
            references=("prior", "empirical"),
            criteria=("difference", "kl"),
            sample=True,
            num_samples=1,
            batch_size=64,
            max_fpr=0.3,
            image_score="max",
            overlay_layer="conv2",
            overlays_per_group=6,
        )
    )
    if variant == "cpu":
        c.train.num_steps = 3_000
        c.train.batch_size = 32
        c.train.learning_rate = 1e-3
        c.train.checkpoint_every = 500
    elif variant == "smoke":
        c.image_size = 28
        c.model.channels = (3, 4, 5)
        c.model.hidden = 8
        c.model.latent_dim = 4
        c.train.num_steps = 2
        c.train.batch_size = 2
        c.train.checkpoint_every = 1
        c.train.log_every = 1
        c.eval.batch_size = 4
        c.eval.overlays_per_group = 2
    return c
