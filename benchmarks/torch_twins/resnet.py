"""Torch twin of our ResNet VAE (``vae_xai.models.resnet_vae``, ``head="flatten"``).

Its BatchNorm layers are :class:`~.layers.FlaxBatchNorm`: ``train`` normalizes with the batch
statistics, ``update`` also moves the running averages as Flax does; the steps of
:mod:`.steps` pass ``update=False`` when they only compute gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    FlaxBatchNorm,
    FlaxConv,
    FlaxConvTranspose,
    FlaxDense,
    FlaxTwin,
    nchw_unflatten,
    nhwc_flatten,
)

# ----------------------------------------------------------------------------- ResNet VAE


class BasicBlock(nn.Module):
    """Twin of ``resnet_vae.BasicBlock``: two 3x3 conv + BN, a 1x1 conv + BN projection of
    the shortcut where the shape changes."""

    def __init__(
        self, in_ch: int, features: int, stride: int, in_hw: tuple[int, int], padding: Any, mom
    ):
        super().__init__()
        self.conv1 = FlaxConv(
            in_ch, features, 3, stride=stride, padding=padding, in_hw=in_hw, bias=False
        )
        self.bn1 = FlaxBatchNorm(features, momentum=mom)
        self.conv2 = FlaxConv(
            features, features, 3, padding=padding, in_hw=self.conv1.out_hw, bias=False
        )
        self.bn2 = FlaxBatchNorm(features, momentum=mom)
        self.out_hw = self.conv2.out_hw
        self.proj = self.proj_bn = None
        if in_ch != features or stride != 1:  # Flax Conv's default padding: "SAME"
            self.proj = FlaxConv(
                in_ch, features, 1, stride=stride, padding="SAME", in_hw=in_hw, bias=False
            )
            self.proj_bn = FlaxBatchNorm(features, momentum=mom)

    def named_flax(self, prefix: str) -> Iterable[tuple[str, nn.Module]]:
        """``(Flax path under prefix, layer)`` of every layer the block has."""
        for name in ("conv1", "bn1", "conv2", "bn2", "proj", "proj_bn"):
            if getattr(self, name) is not None:
                yield f"{prefix}/{name}", getattr(self, name)

    def forward(self, x: torch.Tensor, train: bool, update: bool) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x), train, update))
        y = self.bn2(self.conv2(y), train, update)
        if self.proj is not None:
            x = self.proj_bn(self.proj(x), train, update)
        return F.relu(x + y)


class ResNetVAE(FlaxTwin):
    """Twin of ``vae_xai.models.resnet_vae.ResNetVAE`` (``head="flatten"``)."""

    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 3,
        width: int = 64,
        stage_sizes: Sequence[int] = (2, 2, 2, 2),
        latent_dim: int = 32,
        bn_momentum: float = 0.9,
        padding: str = "zeros",
    ):
        super().__init__()
        self.latent_dim = latent_dim
        mom = bn_momentum
        pad3, pad7 = (1, 3) if padding == "zeros" else ("REFLECT", "REFLECT")
        s = (image_size, image_size)
        self.stem_conv = FlaxConv(
            in_channels, width, 7, stride=2, padding=pad7, in_hw=s, bias=False
        )
        self.stem_bn = FlaxBatchNorm(width, momentum=mom)
        hw = tuple((n + 2 - 3) // 2 + 1 for n in self.stem_conv.out_hw)  # maxpool 3x3 s2 pad 1
        c = width
        self.stages = nn.ModuleList()
        for i, blocks in enumerate(stage_sizes):
            stage = nn.ModuleList()
            for j in range(blocks):
                block = BasicBlock(c, width * 2**i, 2 if (i > 0 and j == 0) else 1, hw, pad3, mom)
                stage.append(block)
                hw, c = block.out_hw, width * 2**i
            self.stages.append(stage)
        self.feat_hw, self.feat_c = hw, c
        self.fc_latent = FlaxDense(hw[0] * hw[1] * c, 2 * latent_dim)
        # decoder
        self.dec_hw, self.dec_c = (image_size // 32, image_size // 32), width * 8
        self.fc_dec = FlaxDense(latent_dim, self.dec_hw[0] * self.dec_hw[1] * self.dec_c)
        self.fc_bn = FlaxBatchNorm(self.dec_hw[0] * self.dec_hw[1] * self.dec_c, momentum=mom)
        chans = [max(width * 8 // 2 ** (i + 1), max(width // 2, 1)) for i in range(5)]
        self.ups, self.up_bns = nn.ModuleList(), nn.ModuleList()
        hw, c = self.dec_hw, self.dec_c
        for ch in chans:
            up = FlaxConvTranspose(c, ch, 4, stride=2, padding="SAME", in_hw=hw, bias=False)
            self.ups.append(up)
            self.up_bns.append(FlaxBatchNorm(ch, momentum=mom))
            hw, c = up.out_hw, ch
        self.out = FlaxConv(c, in_channels, 3, padding=1, in_hw=hw)

    def flax_modules(self) -> Iterable[tuple[str, nn.Module]]:
        """``(Flax path, layer)`` of every layer."""
        yield "encoder/stem/conv", self.stem_conv
        yield "encoder/stem/bn", self.stem_bn
        for i, stage in enumerate(self.stages):
            for j, block in enumerate(stage):
                yield from block.named_flax(f"encoder/stage{i + 1}/block{j + 1}")
        yield "encoder/fc_latent", self.fc_latent
        yield "decoder/fc_dec", self.fc_dec
        yield "decoder/fc_bn", self.fc_bn
        for i, (up, bn) in enumerate(zip(self.ups, self.up_bns, strict=True)):
            yield f"decoder/up{i + 1}", up
            yield f"decoder/up{i + 1}_bn", bn
        yield "decoder/out", self.out

    def encode(
        self, x: torch.Tensor, train: bool = True, update: bool = True, **_: Any
    ) -> dict[str, torch.Tensor]:
        """``{"stem", "stage1".., "mu", "logvar"}`` of the NCHW images ``x``; ``train`` /
        ``update`` as in :class:`~.layers.FlaxBatchNorm`."""
        out: dict[str, torch.Tensor] = {}
        h = F.relu(self.stem_bn(self.stem_conv(x), train, update))
        out["stem"] = h = F.max_pool2d(h, 3, stride=2, padding=1)
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(h, train, update)
            out[f"stage{i + 1}"] = h
        stats = self.fc_latent(nhwc_flatten(h))
        out["mu"], out["logvar"] = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        return out

    def decode(
        self, z: torch.Tensor, train: bool = True, update: bool = True, **_: Any
    ) -> torch.Tensor:
        """The decoder's output ``(B, C, H, W)`` of the latents ``z`` ``(B, latent_dim)``."""
        h = F.relu(self.fc_bn(self.fc_dec(z), train, update))  # BN on the (h, w, c) flat vector
        h = nchw_unflatten(h, self.dec_hw, self.dec_c)
        for up, bn in zip(self.ups, self.up_bns, strict=True):
            h = F.relu(bn(up(h), train, update))
        return self.out(h)
