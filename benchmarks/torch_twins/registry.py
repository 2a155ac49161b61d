"""The twins by name: :data:`MODELS` and :func:`build`, with the architecture, loss and
optimizer hyperparameters of the experiment configs each one mirrors.

* ``"quickstart"``: ``dsprites_vae()`` + ``vae_update_fn(optax.adam(5e-4), beta=4)``.
* ``"mnist_vae"``: ``mnist_vae()`` + ``vae_update_fn(optax.adam(1e-3), beta=1)``.
* ``"factorvae"``: ``dsprites_vae()`` + ``FactorDiscriminator()``, ``factor_vae_loss_fn(gamma=40)``
  with the independent half-batch ``image_disc``, ``factor_vae_optimizer()``.
* ``"ad_factorvae"``: the same with ``ad_weight=1`` (Grad-CAM maps at conv4 through the fast
  ``dense_after="fc1"`` shift path, top-2 attention pair, sampled score, second order).
* ``"resnet_small"``: ``ResNetVAE`` of ``mvtec_localization.py:cpu`` (128x128 RGB, width 16,
  reflect padding, BatchNorm in train mode), Gaussian likelihood (variance 0.05), Adam 1e-3.
* ``"ucsd"``: ``UCSDVAE()`` of ``ucsd_localization.py:cpu``, Gaussian likelihood (variance
  0.5), Adam 1e-3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .models import UCSDVAE, ConvVAE, FactorDiscriminator
from .resnet import ResNetVAE
from .steps import FactorVAEStep, TorchStep, VAEStep

# the names build() knows
MODELS: tuple[str, ...] = (
    "quickstart",
    "mnist_vae",
    "factorvae",
    "ad_factorvae",
    "resnet_small",
    "ucsd",
)


def build(
    name: str,
    batch: Mapping[str, np.ndarray],
    *,
    flax_params: Any = None,
    seed: int = 0,
    flax_batch_stats: Any = None,
    dtype: torch.dtype = torch.float32,
) -> TorchStep:
    """The torch twin of model ``name``'s training step on the fixed ``batch``.

    Args:
      name: one of :data:`MODELS`.
      batch: ``{"image": (B, H, W, C)}`` NHWC float (plus ``"image_disc"`` for the FactorVAE
        steps: the independent half-batch of the permuted samples).
      flax_params: our Flax ``params`` pytree (``{"vae", "disc"}`` for the FactorVAE steps; a
        ``{"params", "batch_stats"}`` variables dict is accepted too). Loaded into the twin;
        its real paths key the gradients. Default: Flax's initializers, drawn with torch.
      seed: seeds the twin's own noise (``eps``, permutations) and default initialization.
      flax_batch_stats: BatchNorm running averages (ResNet); default Flax's init (0 / 1).
      dtype: compute dtype of the twin (float32; float64 for precision-limited parity checks).

    Returns:
      The step (:class:`~.steps.VAEStep` or :class:`~.steps.FactorVAEStep`), ready to run.

    Raises:
      ValueError: ``name`` is not in :data:`MODELS`.
    """
    if name in ("quickstart", "mnist_vae"):
        if name == "quickstart":  # experiments/configs/quickstart.py
            model = ConvVAE((64, 64, 1), (32, 32, 64, 64), 128, 10)
            lr, beta = 5e-4, 4.0
        else:  # experiments/configs/mnist_attention.py
            model = ConvVAE((28, 28, 1), (64, 128), 1024, 32)
            lr, beta = 1e-3, 1.0
        return VAEStep(
            name, model, batch, lr=lr, beta=beta, flax_params=flax_params, seed=seed, dtype=dtype
        )
    if name in ("factorvae", "ad_factorvae"):
        vae = ConvVAE((64, 64, 1), (32, 32, 64, 64), 128, 10)
        disc = FactorDiscriminator(10, 1000, 6, 0.2)
        return FactorVAEStep(
            name,
            vae,
            disc,
            batch,
            gamma=40.0,
            ad_weight=1.0 if name == "ad_factorvae" else 0.0,
            flax_params=flax_params,
            seed=seed,
            dtype=dtype,
        )
    if name == "resnet_small":  # experiments/configs/mvtec_localization.py:cpu
        model = ResNetVAE(128, 3, 16, (2, 2, 2, 2), 32, 0.9, "reflect")
        zero = [
            f"encoder/stage{i + 1}/block{j + 1}/bn2/scale"
            for i, stage in enumerate(model.stages)
            for j in range(len(stage))
        ]
        return VAEStep(
            name,
            model,
            batch,
            lr=1e-3,
            beta=1.0,
            likelihood="gaussian",
            variance=0.05,
            flax_params=flax_params,
            flax_batch_stats=flax_batch_stats,
            seed=seed,
            zero_scale=zero,
            dtype=dtype,
        )
    if name == "ucsd":  # experiments/configs/ucsd_localization.py:cpu
        model = UCSDVAE(100, 1, (32, 64, 128), 512, 32)
        return VAEStep(
            name,
            model,
            batch,
            lr=1e-3,
            beta=1.0,
            likelihood="gaussian",
            variance=0.5,
            flax_params=flax_params,
            seed=seed,
            dtype=dtype,
        )
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
