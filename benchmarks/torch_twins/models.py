"""Torch twins of our BatchNorm-free architectures: the conv VAEs and the FactorVAE
discriminator.

Each twin has the same layers, activations and Flax parameter paths as the Flax module it
mirrors (:meth:`~.layers.FlaxTwin.flax_modules`), so Flax parameters load into it one to one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FlaxConv, FlaxConvTranspose, FlaxDense, FlaxTwin, nchw_unflatten, nhwc_flatten

# ----------------------------------------------------------------------------- ConvVAE


class ConvVAE(FlaxTwin):
    """Twin of ``vae_xai.models.conv_vae.ConvVAE`` (Bernoulli logits)."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        channels: Sequence[int],
        hidden: int,
        latent_dim: int,
    ):
        super().__init__()
        height, width, in_ch = input_shape
        self.latent_dim = latent_dim
        self.convs = nn.ModuleList()
        hw, c = (height, width), in_ch
        for ch in channels:
            conv = FlaxConv(c, ch, 4, stride=2, padding="SAME", in_hw=hw)
            self.convs.append(conv)
            hw, c = conv.out_hw, ch
        self.feat_hw, self.feat_c = hw, c
        self.fc1 = FlaxDense(hw[0] * hw[1] * c, hidden)
        self.fc_latent = FlaxDense(hidden, 2 * latent_dim)
        n = len(channels)
        self.dec_hw = (height // 2**n, width // 2**n)
        self.dec_c = channels[-1]
        self.dec_fc1 = FlaxDense(latent_dim, hidden)
        self.dec_fc2 = FlaxDense(hidden, self.dec_hw[0] * self.dec_hw[1] * channels[-1])
        self.deconvs = nn.ModuleList()
        hw, c = self.dec_hw, channels[-1]
        for ch in [*list(reversed(channels))[1:], in_ch]:
            deconv = FlaxConvTranspose(c, ch, 4, stride=2, padding="SAME", in_hw=hw)
            self.deconvs.append(deconv)
            hw, c = deconv.out_hw, ch

    def flax_modules(self) -> Iterable[tuple[str, nn.Module]]:
        """``(Flax path, layer)`` of every layer; ``Conv_0`` is matched to the real name."""
        for i, conv in enumerate(self.convs):
            yield f"encoder/conv{i + 1}/Conv_0", conv
        yield "encoder/fc1", self.fc1
        yield "encoder/fc_latent", self.fc_latent
        yield "decoder/fc1", self.dec_fc1
        yield "decoder/fc2", self.dec_fc2
        for i, deconv in enumerate(self.deconvs):
            yield f"decoder/deconv{i + 1}", deconv

    def encode(
        self, x: torch.Tensor, delta: torch.Tensor | None = None, **_: Any
    ) -> dict[str, torch.Tensor]:
        """``{"conv1".., "mu", "logvar"}``; ``delta`` ``(B, c)`` is the spatially constant
        shift of the last feature map that the fast Grad-CAM path differentiates (applied on
        the fc1 kernel summed over ``h, w``, exactly as ``split_encoder(dense_after="fc1")``)."""
        out: dict[str, torch.Tensor] = {}
        h = x
        for i, conv in enumerate(self.convs):
            h = F.relu(conv(h))
            out[f"conv{i + 1}"] = h
        pre = self.fc1(nhwc_flatten(h))
        if delta is not None:
            hh, ww = self.feat_hw
            kbar = self.fc1.weight.view(-1, hh, ww, self.feat_c).sum(dim=(1, 2))  # (F, c)
            pre = pre + delta @ kbar.t()
        stats = self.fc_latent(F.relu(pre))
        out["mu"], out["logvar"] = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        return out

    def decode(self, z: torch.Tensor, **_: Any) -> torch.Tensor:
        """The Bernoulli logits ``(B, C, H, W)`` of the latents ``z`` ``(B, latent_dim)``."""
        h = F.relu(self.dec_fc1(z))
        h = F.relu(self.dec_fc2(h))
        h = nchw_unflatten(h, self.dec_hw, self.dec_c)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = F.relu(h)
        return h


# ----------------------------------------------------------------------------- UCSD VAE


class UCSDVAE(FlaxTwin):
    """Twin of ``vae_xai.models.ucsd_vae.UCSDVAE``."""

    def __init__(
        self,
        input_size: int = 100,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 512,
        latent_dim: int = 32,
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.latent_dim = latent_dim
        s = (input_size, input_size)
        self.conv1 = FlaxConv(in_channels, c1, 4, stride=2, padding=((1, 1), (1, 1)), in_hw=s)
        self.conv2 = FlaxConv(
            c1, c2, 4, stride=2, padding=((1, 1), (1, 1)), in_hw=self.conv1.out_hw
        )
        self.conv3 = FlaxConv(c2, c3, 3, stride=2, padding="VALID", in_hw=self.conv2.out_hw)
        self.s3, self.c3 = self.conv3.out_hw, c3
        n3 = self.s3[0] * self.s3[1] * c3
        self.fc1 = FlaxDense(n3, hidden)
        self.fc_latent = FlaxDense(hidden, 2 * latent_dim)
        self.dec_fc1 = FlaxDense(latent_dim, hidden)
        self.dec_fc2 = FlaxDense(hidden, n3)
        self.deconv1 = FlaxConvTranspose(c3, c2, 3, stride=2, padding="VALID", in_hw=self.s3)
        self.deconv2 = FlaxConvTranspose(
            c2, c1, 4, stride=2, padding="SAME", in_hw=self.deconv1.out_hw
        )
        self.deconv3 = FlaxConvTranspose(
            c1, in_channels, 4, stride=2, padding="SAME", in_hw=self.deconv2.out_hw
        )
        if self.deconv3.out_hw != s:
            raise ValueError(f"decoder output {self.deconv3.out_hw} != input {s}")

    def flax_modules(self) -> Iterable[tuple[str, nn.Module]]:
        """``(Flax path, layer)`` of every layer."""
        for name in ("conv1", "conv2", "conv3"):
            yield f"{name}/conv", getattr(self, name)
        for name in ("fc1", "fc_latent", "dec_fc1", "dec_fc2", "deconv1", "deconv2", "deconv3"):
            yield name, getattr(self, name)

    def encode(self, x: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
        """``{"conv1", "conv2", "conv3", "mu", "logvar"}`` of the NCHW images ``x``."""
        out: dict[str, torch.Tensor] = {}
        out["conv1"] = h = F.relu(self.conv1(x))
        out["conv2"] = h = F.relu(self.conv2(h))
        out["conv3"] = h = F.relu(self.conv3(h))
        stats = self.fc_latent(F.relu(self.fc1(nhwc_flatten(h))))
        out["mu"], out["logvar"] = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        return out

    def decode(self, z: torch.Tensor, **_: Any) -> torch.Tensor:
        """The decoder's logits ``(B, C, H, W)`` of the latents ``z`` ``(B, latent_dim)``."""
        h = F.relu(self.dec_fc1(z))
        h = nchw_unflatten(F.relu(self.dec_fc2(h)), self.s3, self.c3)
        h = F.relu(self.deconv1(h))
        h = F.relu(self.deconv2(h))
        return self.deconv3(h)


# ----------------------------------------------------------------------------- discriminator


class FactorDiscriminator(FlaxTwin):
    """Twin of ``vae_xai.models.factor_vae.FactorDiscriminator`` (6 x 1000, leaky ReLU 0.2)."""

    def __init__(
        self,
        latent_dim: int = 10,
        hidden: int = 1000,
        num_layers: int = 6,
        negative_slope: float = 0.2,
    ):
        super().__init__()
        self.negative_slope = negative_slope
        dims = [latent_dim] + [hidden] * num_layers
        self.fcs = nn.ModuleList(FlaxDense(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.logits = FlaxDense(hidden, 2)

    def flax_modules(self) -> Iterable[tuple[str, nn.Module]]:
        """``(Flax path, layer)`` of every layer."""
        for i, fc in enumerate(self.fcs):
            yield f"fc{i + 1}", fc
        yield "logits", self.logits

    def forward(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """The ``(B, 2)`` logits of "joint" (0) vs "permuted" (1) for the latents ``z``.

        Args:
          z: ``(B, latent_dim)``.
          frozen: use detached weights (``stop_gradient`` on the discriminator), so the VAE's
            TC term does not train the discriminator.
        """

        def dense(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
            if frozen:
                return F.linear(h, layer.weight.detach(), layer.bias.detach())
            return layer(h)

        h = z
        for fc in self.fcs:
            h = F.leaky_relu(dense(fc, h), self.negative_slope)
        return dense(self.logits, h)
