"""PyTorch twins of our models' full training steps, for side-by-side throughput benchmarks.

Each twin is the same computation as the JAX/Flax step it mirrors (same layers, activations,
loss terms, reductions, optimizer and hyperparameters); ``benchmarks/test_torch_parity.py``
proves it by loading our Flax initial parameters and comparing loss terms and gradients.
torch is an optional benchmark dependency: nothing in vae_xai/, tests/ or experiments/ imports
this package. It needs only numpy and torch (no jax), and imports its own modules relatively,
so it imports both as ``benchmarks.torch_twins`` and, with ``benchmarks/`` on ``sys.path``, as
plain ``torch_twins``.

Usage::

    step = build("quickstart", {"image": images_nhwc}, flax_params=params)
    metrics = step.step()                      # one full training step (forward .. Adam)
    terms, grads = step.loss_and_grads(eps=eps)  # no update; grads keyed by Flax path

Modules, one job each:

* :mod:`.layers`: torch layers that compute what Flax's Conv, ConvTranspose, Dense and
  BatchNorm compute (``lax`` padding, Flax's BatchNorm update), and the twins' base class.
* :mod:`.models`: the BatchNorm-free architectures (``ConvVAE``, ``UCSDVAE``,
  ``FactorDiscriminator``); :mod:`.resnet`: the ResNet VAE.
* :mod:`.weights`: Flax params <-> torch tensors (paths, layouts, loading, Flax's init).
* :mod:`.steps`: the training steps (losses, optimizers, explicit noise inputs).
* :mod:`.registry`: the twins by name (:data:`MODELS`, :func:`build`).
"""

from .layers import FlaxBatchNorm, FlaxConv, FlaxConvTranspose, FlaxDense, FlaxTwin
from .models import UCSDVAE, ConvVAE, FactorDiscriminator
from .registry import MODELS, build
from .resnet import ResNetVAE
from .steps import FactorVAEStep, TorchStep, VAEStep
from .weights import flatten_flax

__all__ = [
    "MODELS",
    "UCSDVAE",
    "ConvVAE",
    "FactorDiscriminator",
    "FactorVAEStep",
    "FlaxBatchNorm",
    "FlaxConv",
    "FlaxConvTranspose",
    "FlaxDense",
    "FlaxTwin",
    "ResNetVAE",
    "TorchStep",
    "VAEStep",
    "build",
    "flatten_flax",
]
