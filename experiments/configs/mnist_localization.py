"""Config for experiments/mnist_localization.py: a positive control for anomaly localization.

A one-class VAE (the paper's MNIST ConvVAE) is trained on one digit; held-out test images of
the same digit get synthetic anomalies with exact masks (a square of added ink, ``"square"``,
and a square of removed ink, ``"erase"``; see :mod:`data_pipelines.synthetic_anomaly`), and the
reconstruction error and anomaly-attention maps are scored with the MVTec-AD metrics.

``get_config(arg)`` with ``arg`` one of (:mod:`experiments.configs.common`):

* ``None`` / ``"cpu"`` (default) -- 1,000 steps of batch 64 (~10 epochs of one digit's ~6,000
  training images), Adam 1e-3: minutes on a laptop CPU.
* ``"full"`` -- 6,000 steps of batch 128 (~120 epochs), the schedule of
  ``experiments/configs/mnist_attention.py``; for an accelerator.
* ``"smoke"`` -- seconds-long test config (3 steps of batch 8, latent 4, 16 test images).

``normal_digit`` is 3, an ink-heavy digit (so an ``"erase"`` square often removes ink); an
ink-light digit can be tried with ``--config.normal_digit=1``. Evaluation (all variants):
reconstruction error and anomaly attention at conv1 and conv2 with the N(0, 1) prior and the
empirical training statistics as reference, with the paper's sampled difference score and the
per-latent KL score; and the VAE maps beyond the paper named in ``eval.maps``
(:mod:`vae_xai.localization.vae_maps`): input gradients of the ELBO / KL / reconstruction term
(``eval.grad``: ``z = mu``, Zimmerer et al.'s smoothing, kernel 8 -> 7, sigma 3, large for a
28x28 image: set ``smooth_kernel=0`` to compare unsmoothed), "combi" and the additive form
(``eval.combi``: ranges over the whole test set), the energy-based projection
(``eval.projection``: 100 steps of size 0.05, lambda 1; 2 in ``"smoke"``), and the attention
as a weight on the reconstruction error (``eval.attention_x_recon``).
"""

from __future__ import annotations

import ml_collections

from experiments.configs.common import parse_variant, vae_maps_eval

VARIANTS = ("smoke", "cpu", "full")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Build the mnist_localization config.

    Args:
      arg: what follows ``:`` in ``--config=PATH:arg``: ``smoke``, ``cpu`` or ``full``,
        default ``cpu``; see the module doc.

    Returns:
      The config.

    Raises:
      ValueError: an unknown variant (:func:`experiments.configs.common.parse_variant`).
    """
    variant = parse_variant(arg, variants=VARIANTS, default="cpu", config="mnist_localization").name
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.normal_digit = 3
    c.model = ml_collections.ConfigDict(dict(latent_dim=32))
    # the ELBO and schedule of vae_xai.localization.train_on_normal
    c.train = ml_collections.ConfigDict(
        dict(
            num_steps=1_000,
            batch_size=64,
            learning_rate=1e-3,
            beta=1.0,
            likelihood="bernoulli",
            variance=0.5,  # unused with the Bernoulli likelihood
            checkpoint_every=250,
            log_every=50,
        )
    )
    c.anomaly = ml_collections.ConfigDict(
        dict(
            kinds=("square", "erase"),
            fraction=0.5,  # of each kind's chunk of clean test images
            size=7,
            margin=2,
            max_test_images=1_000,  # clean test images of normal_digit (before pasting)
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            layers=("conv1", "conv2"),
            references=("prior", "empirical"),
            criteria=("difference", "kl"),
            baselines=("center_prior", "intensity"),
            sample=True,
            num_samples=1,
            batch_size=250,
            max_fpr=0.3,
            image_score="max",
            overlay_layer="conv2",
            overlays_per_group=6,
            **vae_maps_eval(),
        )
    )
    if variant == "full":
        c.train.num_steps = 6_000
        c.train.batch_size = 128
        c.train.checkpoint_every = 1_000
        c.train.log_every = 100
    elif variant == "smoke":
        c.model.latent_dim = 4
        c.train.num_steps = 3
        c.train.batch_size = 8
        c.train.checkpoint_every = 3  # only the final step (each orbax save takes time)
        c.train.log_every = 1
        c.anomaly.max_test_images = 16
        c.eval.batch_size = 8
        c.eval.overlays_per_group = 2
        c.eval.projection.steps = 2
    return c
