"""Convolutional VAEs that return their named intermediates.

One configurable architecture covers the paper's one-class MNIST model (conv 64 4x4 s2,
conv 128 4x4 s2, dense 1024, latent 32) and the FactorVAE/dSprites model of Kim & Mnih (2018)
(conv 32-32-64-64 4x4 s2, dense 128, latent 10); the decoder mirrors the encoder and outputs
Bernoulli logits. Conv blocks are named ``conv1``, ``conv2``, ... and their outputs are the
post-ReLU feature maps that attention is computed at; the Dense after the last block is named
``fc1`` and consumes ``flatten(conv_last)`` in row-major order, so attention at the last conv
layer can use the fast path (``split_encoder(..., dense_after="fc1")``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_xai.fast_conv import Conv, ConvTranspose, Impl
from vae_xai.losses import reparameterize


class ConvBlock(nn.Module):
    """``Conv`` followed by ReLU; its output is the feature map attention uses."""

    features: int
    kernel_size: int = 4
    strides: int = 2
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, (self.strides, self.strides)
        x = Conv(self.features, (k, k), strides=s, padding="SAME", impl=self.conv_impl)(x)
        return nn.relu(x)


class ConvEncoder(nn.Module):
    """``x (B, H, W, C) -> {"conv1", ..., "mu", "logvar"}``."""

    channels: Sequence[int]
    hidden: int
    latent_dim: int
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        h = x
        for i, ch in enumerate(self.channels):
            h = ConvBlock(ch, conv_impl=self.conv_impl, name=f"conv{i + 1}")(h)
            out[f"conv{i + 1}"] = h
        h = h.reshape(h.shape[0], -1)
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(h))
        stats = nn.Dense(2 * self.latent_dim, name="fc_latent")(h)
        out["mu"], out["logvar"] = jnp.split(stats, 2, axis=-1)
        return out


class ConvDecoder(nn.Module):
    """``z (B, D) -> logits (B, H, W, C)``, mirroring :class:`ConvEncoder`."""

    channels: Sequence[int]
    hidden: int
    output_shape: tuple[int, int, int]
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        height, width, out_ch = self.output_shape
        n = len(self.channels)
        h0, w0 = height // 2**n, width // 2**n
        h = nn.relu(nn.Dense(self.hidden, name="fc1")(z))
        h = nn.relu(nn.Dense(h0 * w0 * self.channels[-1], name="fc2")(h))
        h = h.reshape(h.shape[0], h0, w0, self.channels[-1])
        up = dict(kernel_size=(4, 4), strides=(2, 2), padding="SAME", impl=self.conv_impl)
        for i, ch in enumerate(list(reversed(self.channels))[1:]):
            h = nn.relu(ConvTranspose(ch, **up, name=f"deconv{i + 1}")(h))
        return ConvTranspose(out_ch, **up, name=f"deconv{n}")(h)


class ConvVAE(nn.Module):
    """A convolutional VAE with Bernoulli likelihood.

    ``__call__(x, key=None)`` returns a dict with the encoder intermediates (``conv1``...),
    ``mu``, ``logvar`` (each ``(B, D)``), ``z`` (the reparameterized sample, or ``mu`` when no
    key is given) and ``logits`` (``(B, H, W, C)``). ``encode`` and ``decode`` are the halves.

    ``conv_impl`` picks how the strided and transposed convolutions run
    (:mod:`vae_xai.fast_conv`): ``"auto"`` (fast custom gradients on CPU, XLA's ops on GPU/TPU),
    ``"xla"`` or ``"fast"``. Parameters and outputs are the same for all three.
    """

    input_shape: tuple[int, int, int] = (28, 28, 1)
    channels: Sequence[int] = (64, 128)
    hidden: int = 1024
    latent_dim: int = 32
    conv_impl: Impl = "auto"

    def setup(self) -> None:
        height, width, _ = self.input_shape
        n = len(self.channels)
        if height % 2**n or width % 2**n:
            raise ValueError(
                f"input_shape {self.input_shape} must be divisible by 2**{n} "
                "(one stride-2 conv per channel entry)"
            )
        self.encoder = ConvEncoder(self.channels, self.hidden, self.latent_dim, self.conv_impl)
        self.decoder = ConvDecoder(
            self.channels, self.hidden, tuple(self.input_shape), self.conv_impl
        )

    def encode(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encode images to the posterior and the named feature maps.

        Args:
          x: ``(B, *input_shape)``.
          train: accepted and unused (no BatchNorm or dropout), so that code written for the
            BatchNorm models (:mod:`vae_xai.localization`) calls every model the same way.

        Returns:
          ``{"conv1", ..., "mu", "logvar"}``: the post-ReLU feature maps and ``(B, D)`` posterior
          parameters.

        Raises:
          ValueError: ``x`` is not ``(B, *input_shape)``.
        """
        del train
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(
                f"expected input (B, {', '.join(map(str, self.input_shape))}); got {x.shape}"
            )
        return self.encoder(x)

    def decode(self, z: jax.Array) -> jax.Array:
        """Decode latents to Bernoulli logits.

        Args:
          z: ``(B, D)``.

        Returns:
          Logits ``(B, *input_shape)``.
        """
        return self.decoder(z)

    def __call__(
        self, x: jax.Array, key: jax.Array | None = None, train: bool = False
    ) -> dict[str, Any]:
        # ``train`` is accepted (and unused: no BatchNorm/dropout) so that every model in
        # vae_xai.models has the same call signature for vae_xai.train.vae_update_fn.
        out = self.encode(x)
        mu, logvar = out["mu"], out["logvar"]
        out["z"] = mu if key is None else reparameterize(mu, logvar, key)
        out["logits"] = self.decode(out["z"])
        return out


def mnist_vae(latent_dim: int = 32, conv_impl: Impl = "auto") -> ConvVAE:
    """The paper's one-class MNIST VAE (28x28x1; conv 64, conv 128, dense 1024, latent 32).

    Args:
      latent_dim: latent size ``D``.
      conv_impl: convolution implementation (see :func:`vae_xai.fast_conv.resolve_impl`).

    Returns:
      The (uninitialized) module.
    """
    return ConvVAE(
        input_shape=(28, 28, 1),
        channels=(64, 128),
        hidden=1024,
        latent_dim=latent_dim,
        conv_impl=conv_impl,
    )


def dsprites_vae(latent_dim: int = 10, conv_impl: Impl = "auto") -> ConvVAE:
    """Kim & Mnih's FactorVAE architecture for 64x64 dSprites (conv 32-32-64-64, dense 128).

    Args:
      latent_dim: latent size ``D``.
      conv_impl: convolution implementation (see :func:`vae_xai.fast_conv.resolve_impl`).

    Returns:
      The (uninitialized) module.
    """
    return ConvVAE(
        input_shape=(64, 64, 1),
        channels=(32, 32, 64, 64),
        hidden=128,
        latent_dim=latent_dim,
        conv_impl=conv_impl,
    )
