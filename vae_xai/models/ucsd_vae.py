"""The convolutional VAE for UCSD Ped1 anomaly localization (paper Sec. 4.1, Table 1).

Input: grayscale ``100 x 100`` frames. Encoder (each block conv + ReLU, output = feature map)::

    x (B, 100, 100, 1)
    conv1  conv 4x4 s2 pad 1 (c1) + ReLU     -> (B, 50, 50, c1)
    conv2  conv 4x4 s2 pad 1 (c2) + ReLU     -> (B, 25, 25, c2)
    conv3  conv 3x3 s2 VALID (c3) + ReLU     -> (B, 12, 12, c3)
    fc1    Dense(hidden) + ReLU on flatten(conv3)
    fc_latent  Dense(2 * latent_dim)         -> mu, logvar (B, D)

The three feature-map sizes 50, 25, 12 are the paper's conv1/conv2/conv3 of Table 1; any of
them is the attention layer by name (``split_encoder(..., layer="conv2", method="encode")``).
``fc1`` consumes ``flatten(conv3)`` row-major, so attention at ``conv3`` can use the exact fast
path (``dense_after="fc1"``). The decoder mirrors the encoder (Dense, Dense to 12x12x c3,
ConvTranspose 3x3 s2 VALID -> 25, 4x4 s2 -> 50, 4x4 s2 -> 100) and outputs logits; the image
mean is ``sigmoid(logits)``. For ``input_size`` other than 100 (e.g. tiny test models) the
same layers give ``S/2, S/4, (S/4 - 1) / 2``; ``S/4`` must be odd (e.g. 100, 28, 20).

There is no BatchNorm; ``train`` is accepted (and ignored) so that this model and
:class:`vae_xai.models.resnet_vae.ResNetVAE` share one calling convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_xai.fast_conv import Conv, ConvTranspose, Impl
from vae_xai.losses import reparameterize

__all__ = ["CONV_NAMES", "UCSDVAE", "dense_after"]

CONV_NAMES: tuple[str, ...] = ("conv1", "conv2", "conv3")


def dense_after(layer: str) -> str | None:
    """The Dense that consumes ``flatten(layer)`` (for the fast attention path), or None.

    Args:
      layer: an attention layer name (:data:`CONV_NAMES`).

    Returns:
      ``"fc1"`` for ``"conv3"``, else None.
    """
    return "fc1" if layer == "conv3" else None


class ConvReLU(nn.Module):
    """``Conv`` + ReLU; its output is the feature map attention uses."""

    features: int
    kernel_size: int
    padding: Any
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, pad = self.kernel_size, (2, 2), self.padding
        x = Conv(self.features, (k, k), strides=s, padding=pad, impl=self.conv_impl, name="conv")(x)
        return nn.relu(x)


def _conv3_size(size: int) -> int:
    return (size // 4 - 3) // 2 + 1


class UCSDVAE(nn.Module):
    """Three-conv VAE for 100x100 grayscale frames (see the module docstring).

    Attributes:
      input_size: ``S`` (100 for the paper); square frames.
      in_channels: 1 (grayscale).
      channels: ``(c1, c2, c3)``.
      hidden: width of ``fc1``.
      latent_dim: ``D``.
      conv_impl: how strided/transposed convolutions run (:mod:`vae_xai.fast_conv`; ``"auto"``:
        fast custom gradients on CPU, XLA's ops elsewhere). Same parameters and outputs.

    ``__call__(x, key=None, train=False)`` returns ``conv1..conv3``, ``mu``, ``logvar``,
    ``z`` (sample, or ``mu`` without a key) and ``logits`` ``(B, S, S, 1)``.
    """

    input_size: int = 100
    in_channels: int = 1
    channels: Sequence[int] = (32, 64, 128)
    hidden: int = 512
    latent_dim: int = 32
    conv_impl: Impl = "auto"

    def setup(self) -> None:
        if len(self.channels) != 3:
            raise ValueError(f"channels must have 3 entries (conv1..conv3); got {self.channels}")
        if self.input_size % 4 or (self.input_size // 4) % 2 == 0 or self.input_size < 12:
            raise ValueError(
                "input_size must be 4 times an odd number >= 3 (e.g. 100, 28, 20) so that the "
                f"decoder mirrors conv3 exactly; got {self.input_size}"
            )
        c1, c2, c3 = self.channels
        impl = self.conv_impl
        self.conv1 = ConvReLU(c1, 4, ((1, 1), (1, 1)), impl)
        self.conv2 = ConvReLU(c2, 4, ((1, 1), (1, 1)), impl)
        self.conv3 = ConvReLU(c3, 3, "VALID", impl)
        self.fc1 = nn.Dense(self.hidden)
        self.fc_latent = nn.Dense(2 * self.latent_dim)
        s3 = _conv3_size(self.input_size)
        self.dec_fc1 = nn.Dense(self.hidden)
        self.dec_fc2 = nn.Dense(s3 * s3 * c3)
        up = dict(strides=(2, 2), impl=impl)
        self.deconv1 = ConvTranspose(c2, (3, 3), padding="VALID", **up)
        self.deconv2 = ConvTranspose(c1, (4, 4), padding="SAME", **up)
        self.deconv3 = ConvTranspose(self.in_channels, (4, 4), padding="SAME", **up)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.input_size, self.input_size, self.in_channels)

    def encode(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encode frames to the posterior and the named feature maps.

        Args:
          x: ``(B, S, S, 1)``.
          train: accepted and ignored (no BatchNorm).

        Returns:
          ``{"conv1", "conv2", "conv3", "mu", "logvar"}``.

        Raises:
          ValueError: ``x`` is not ``(B, S, S, 1)``.
        """
        del train
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected input (B, {', '.join(map(str, self.input_shape))}); got {x.shape}"
            )
        out: dict[str, jax.Array] = {}
        out["conv1"] = h = self.conv1(x)
        out["conv2"] = h = self.conv2(h)
        out["conv3"] = h = self.conv3(h)
        h = nn.relu(self.fc1(h.reshape(h.shape[0], -1)))
        out["mu"], out["logvar"] = jnp.split(self.fc_latent(h), 2, axis=-1)
        return out

    def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
        """Decode latents to logits.

        Args:
          z: ``(B, D)``.
          train: accepted and ignored (no BatchNorm).

        Returns:
          Logits ``(B, S, S, 1)``.
        """
        del train
        s3 = _conv3_size(self.input_size)
        h = nn.relu(self.dec_fc1(z))
        h = nn.relu(self.dec_fc2(h)).reshape(z.shape[0], s3, s3, self.channels[2])
        h = nn.relu(self.deconv1(h))  # VALID 3x3 s2: 2 * s3 + 1 = S / 4
        h = nn.relu(self.deconv2(h))
        return self.deconv3(h)

    def __call__(
        self, x: jax.Array, key: jax.Array | None = None, train: bool = False
    ) -> dict[str, Any]:
        out = self.encode(x, train)
        mu, logvar = out["mu"], out["logvar"]
        out["z"] = mu if key is None else reparameterize(mu, logvar, key)
        out["logits"] = self.decode(out["z"], train)
        return out
