"""PyTorch twins of our models' full training steps, for side-by-side throughput benchmarks.

Each twin is the same computation as the JAX/Flax step it mirrors (same layers, activations,
loss terms, reductions, optimizer and hyperparameters); ``benchmarks/test_torch_parity.py``
proves it by loading our Flax initial parameters and comparing loss terms and gradients.
torch is an optional benchmark dependency: nothing in vae_xai/, tests/ or experiments/ imports
this module. It needs only numpy and torch (no jax), and has no package-relative imports, so
it imports both as ``benchmarks.torch_models`` and, with ``benchmarks/`` on ``sys.path``, as
plain ``torch_models``.

Models (:data:`MODELS`) and the steps they mirror:

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

Usage::

    step = build("quickstart", {"image": images_nhwc}, flax_params=params)
    metrics = step.step()                      # one full training step (forward .. Adam)
    terms, grads = step.loss_and_grads(eps=eps)  # no update; grads keyed by Flax path

Layouts: batches are given NHWC (as our pipelines make them) and converted once to NCHW at
:func:`build`. Flax Conv kernels HWIO <-> torch OIHW; Flax ConvTranspose kernels ``(kh, kw,
in, out)`` (``lax.conv_transpose``, ``transpose_kernel=False``: a correlation of the dilated
input) <-> torch ``ConvTranspose2d`` weights ``(in, out, kh, kw)`` spatially flipped; Dense
``(in, out)`` <-> Linear ``(out, in)``. Our models flatten NHWC row-major, so the twins
permute NCHW -> NHWC before each flatten (and back after each unflatten), which makes the Dense
weights identical. Padding follows ``lax`` exactly (``"SAME"`` -> ``(total // 2, total - total
// 2)``; ``"REFLECT"`` -> ``((k-1)//2, k//2)`` reflected; ConvTranspose pads of the dilated
input -> torch ``padding = k - 1 - lo``, ``output_padding = hi - lo``).

BatchNorm (ResNet) is Flax's: batch statistics in train mode, running averages updated with
Flax's momentum (0.9 = torch's 0.1) and the *biased* batch variance (torch's own update uses
the unbiased one; corrected here on the ``C``-sized buffers, so exact at negligible cost).

Randomness cannot match across frameworks: :meth:`TorchStep.loss_and_grads` and
:meth:`TorchStep.step` accept the reparameterization noise ``eps`` ``(B, D)`` (and for the
FactorVAE steps ``eps_disc`` ``(B, D)`` and the per-dim permutation ``perm`` ``(B, D)``, with
``z_perm[b, d] = z_disc[perm[b, d], d]``, i.e. ``perms.T`` of
:func:`vae_xai.losses.permute_dims`) as explicit inputs; when omitted they are drawn with torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MODELS", "TorchStep", "build", "flatten_flax"]

MODELS: tuple[str, ...] = (
    "quickstart",
    "mnist_vae",
    "factorvae",
    "ad_factorvae",
    "resnet_small",
    "ucsd",
)

_AUTO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")  # Flax's auto names, e.g. "Conv_0"


# ----------------------------------------------------------------------------- padding (lax)


def _same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """``lax`` "SAME" padding of one spatial dim: ``(total // 2, total - total // 2)``."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv_transpose_pads(k: int, s: int, padding: Any) -> tuple[int, int]:
    """Padding of the dilated input that ``lax.conv_transpose`` uses for one spatial dim."""
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else int(math.ceil(pad_len / 2))
        return pad_a, pad_len - pad_a
    if padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        return k - 1, pad_len - (k - 1)
    lo, hi = padding
    return int(lo), int(hi)


def _pairs(padding: Any) -> list[tuple[int, int]]:
    if isinstance(padding, int):
        return [(padding, padding)] * 2
    return [(int(lo), int(hi)) for lo, hi in padding]


# ----------------------------------------------------------------------------- layers


class FlaxConv(nn.Module):
    """``flax.linen.Conv`` (or our ``fast_conv.Conv``) on NCHW tensors.

    ``padding``: ``"SAME"``, ``"VALID"``, ``"REFLECT"``, an int, or ``((lo, hi), (lo, hi))``;
    ``in_hw`` is the input's spatial size (needed to resolve "SAME").
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        k: int,
        *,
        stride: int = 1,
        padding: Any = "SAME",
        in_hw: tuple[int, int],
        bias: bool = True,
    ):
        super().__init__()
        self.k, self.stride = k, stride
        mode = "zeros"
        if padding == "SAME":
            pads = [_same_pads(n, k, stride) for n in in_hw]
        elif padding == "VALID":
            pads = [(0, 0), (0, 0)]
        elif padding == "REFLECT":
            pads = [((k - 1) // 2, k // 2)] * 2
            mode = "reflect"
        else:
            pads = _pairs(padding)
        self.out_hw = tuple(
            (n + lo + hi - k) // stride + 1 for n, (lo, hi) in zip(in_hw, pads, strict=True)
        )
        symmetric = all(lo == hi for lo, hi in pads)
        # symmetric pads go into Conv2d (fused for zeros); otherwise an explicit F.pad
        self._pre_pad = None if symmetric else (pads[1][0], pads[1][1], pads[0][0], pads[0][1])
        self._pad_mode = "constant" if mode == "zeros" else mode
        self.conv = nn.Conv2d(
            in_ch,
            out_ch,
            k,
            stride=stride,
            padding=(pads[0][0], pads[1][0]) if symmetric else 0,
            padding_mode=mode if symmetric else "zeros",
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pre_pad is not None:
            x = F.pad(x, self._pre_pad, mode=self._pad_mode)
        return self.conv(x)

    def flax_leaves(self) -> dict[str, tuple[torch.Tensor, str]]:
        leaves = {"kernel": (self.conv.weight, "conv")}
        if self.conv.bias is not None:
            leaves["bias"] = (self.conv.bias, "vec")
        return leaves


class FlaxConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose`` (``transpose_kernel=False``) on NCHW tensors."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        k: int,
        *,
        stride: int = 2,
        padding: Any = "SAME",
        in_hw: tuple[int, int],
        bias: bool = True,
    ):
        super().__init__()
        lo, hi = _conv_transpose_pads(k, stride, padding)
        if not (0 <= k - 1 - lo and 0 <= hi - lo < stride):
            raise ValueError(f"ConvTranspose padding {(lo, hi)} has no torch equivalent")
        self.out_hw = tuple((n - 1) * stride + 1 + lo + hi - k + 1 for n in in_hw)
        self.conv = nn.ConvTranspose2d(
            in_ch,
            out_ch,
            k,
            stride=stride,
            padding=k - 1 - lo,
            output_padding=hi - lo,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def flax_leaves(self) -> dict[str, tuple[torch.Tensor, str]]:
        leaves = {"kernel": (self.conv.weight, "convT")}
        if self.conv.bias is not None:
            leaves["bias"] = (self.conv.bias, "vec")
        return leaves


class FlaxDense(nn.Linear):
    """``flax.linen.Dense``: torch Linear whose weight is the transposed Flax kernel."""

    def flax_leaves(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"kernel": (self.weight, "dense"), "bias": (self.bias, "vec")}


class FlaxBatchNorm(nn.Module):
    """``flax.linen.BatchNorm`` (feature axis 1 here) with Flax's running-average update.

    ``forward(x, train, update)``: ``train`` normalizes with the batch statistics (biased
    variance, as both frameworks do); ``update`` also moves the running averages like Flax:
    ``ra = momentum * ra + (1 - momentum) * batch_stat`` with the *biased* variance.
    """

    def __init__(self, num_features: int, *, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor, train: bool = True, update: bool = True) -> torch.Tensor:
        if not train:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if not update:
            return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        old_var = self.running_var
        new_var = old_var.clone()  # torch updates it in place and keeps it for backward
        y = F.batch_norm(
            x,
            self.running_mean,
            new_var,
            self.weight,
            self.bias,
            True,
            1.0 - self.momentum,
            self.eps,
        )
        n = x.numel() // x.shape[1]
        with torch.no_grad():  # torch added (1 - m) * unbiased var; Flax adds the biased one
            self.running_var.copy_(new_var - (new_var - self.momentum * old_var) / n)
        return y

    def flax_leaves(self) -> dict[str, tuple[torch.Tensor, str]]:
        return {"scale": (self.weight, "vec"), "bias": (self.bias, "vec")}

    def flax_stats(self) -> dict[str, torch.Tensor]:
        return {"mean": self.running_mean, "var": self.running_var}


def _nhwc_flatten(h: torch.Tensor) -> torch.Tensor:
    """NCHW -> flatten in our Flax models' row-major NHWC order ``(h, w, c)``."""
    return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)


def _nchw_unflatten(h: torch.Tensor, hw: tuple[int, int], c: int) -> torch.Tensor:
    """Inverse of :func:`_nhwc_flatten`: ``(B, h*w*c)`` in (h, w, c) order -> NCHW."""
    return h.reshape(h.shape[0], hw[0], hw[1], c).permute(0, 3, 1, 2)


class _FlaxTwin(nn.Module):
    """A torch module whose parameters carry their Flax paths (:meth:`flax_modules`)."""

    def flax_modules(self) -> Iterable[tuple[str, nn.Module]]:
        """``(default Flax path prefix, layer)`` for every parameterized layer."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- ConvVAE


class ConvVAE(_FlaxTwin):
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
        pre = self.fc1(_nhwc_flatten(h))
        if delta is not None:
            hh, ww = self.feat_hw
            kbar = self.fc1.weight.view(-1, hh, ww, self.feat_c).sum(dim=(1, 2))  # (F, c)
            pre = pre + delta @ kbar.t()
        stats = self.fc_latent(F.relu(pre))
        out["mu"], out["logvar"] = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        return out

    def decode(self, z: torch.Tensor, **_: Any) -> torch.Tensor:
        h = F.relu(self.dec_fc1(z))
        h = F.relu(self.dec_fc2(h))
        h = _nchw_unflatten(h, self.dec_hw, self.dec_c)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = F.relu(h)
        return h


# ----------------------------------------------------------------------------- UCSD VAE


class UCSDVAE(_FlaxTwin):
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
        for name in ("conv1", "conv2", "conv3"):
            yield f"{name}/conv", getattr(self, name)
        for name in ("fc1", "fc_latent", "dec_fc1", "dec_fc2", "deconv1", "deconv2", "deconv3"):
            yield name, getattr(self, name)

    def encode(self, x: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        out["conv1"] = h = F.relu(self.conv1(x))
        out["conv2"] = h = F.relu(self.conv2(h))
        out["conv3"] = h = F.relu(self.conv3(h))
        stats = self.fc_latent(F.relu(self.fc1(_nhwc_flatten(h))))
        out["mu"], out["logvar"] = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        return out

    def decode(self, z: torch.Tensor, **_: Any) -> torch.Tensor:
        h = F.relu(self.dec_fc1(z))
        h = _nchw_unflatten(F.relu(self.dec_fc2(h)), self.s3, self.c3)
        h = F.relu(self.deconv1(h))
        h = F.relu(self.deconv2(h))
        return self.deconv3(h)


# ----------------------------------------------------------------------------- ResNet VAE


class BasicBlock(nn.Module):
    """Twin of ``resnet_vae.BasicBlock``."""

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
        for name in ("conv1", "bn1", "conv2", "bn2", "proj", "proj_bn"):
            if getattr(self, name) is not None:
                yield f"{prefix}/{name}", getattr(self, name)

    def forward(self, x: torch.Tensor, train: bool, update: bool) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x), train, update))
        y = self.bn2(self.conv2(y), train, update)
        if self.proj is not None:
            x = self.proj_bn(self.proj(x), train, update)
        return F.relu(x + y)


class ResNetVAE(_FlaxTwin):
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
        out: dict[str, torch.Tensor] = {}
        h = F.relu(self.stem_bn(self.stem_conv(x), train, update))
        out["stem"] = h = F.max_pool2d(h, 3, stride=2, padding=1)
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(h, train, update)
            out[f"stage{i + 1}"] = h
        stats = self.fc_latent(_nhwc_flatten(h))
        out["mu"], out["logvar"] = stats[:, : self.latent_dim], stats[:, self.latent_dim :]
        return out

    def decode(
        self, z: torch.Tensor, train: bool = True, update: bool = True, **_: Any
    ) -> torch.Tensor:
        h = F.relu(self.fc_bn(self.fc_dec(z), train, update))  # BN on the (h, w, c) flat vector
        h = _nchw_unflatten(h, self.dec_hw, self.dec_c)
        for up, bn in zip(self.ups, self.up_bns, strict=True):
            h = F.relu(bn(up(h), train, update))
        return self.out(h)


# ----------------------------------------------------------------------------- discriminator


class FactorDiscriminator(_FlaxTwin):
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
        for i, fc in enumerate(self.fcs):
            yield f"fc{i + 1}", fc
        yield "logits", self.logits

    def forward(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``frozen``: use detached weights (``stop_gradient`` on the discriminator)."""

        def dense(layer: nn.Linear, h: torch.Tensor) -> torch.Tensor:
            if frozen:
                return F.linear(h, layer.weight.detach(), layer.bias.detach())
            return layer(h)

        h = z
        for fc in self.fcs:
            h = F.leaky_relu(dense(fc, h), self.negative_slope)
        return dense(self.logits, h)


# ----------------------------------------------------------------------------- Flax <-> torch


def flatten_flax(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """A nested Flax params dict as ``{"a/b/kernel": np.ndarray}`` (jax arrays welcome)."""
    flat: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten_flax(v, path))
        else:
            flat[path] = np.asarray(v)
    return flat


def _to_torch_layout(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # HWIO -> OIHW
        return a.transpose(3, 2, 0, 1)
    if kind == "convT":  # (kh, kw, in, out), lax correlation -> (in, out, kh, kw), flipped
        return a[::-1, ::-1].transpose(2, 3, 0, 1)
    if kind == "dense":  # (in, out) -> (out, in)
        return a.T
    return a


def _to_flax_layout(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # OIHW -> HWIO
        return a.transpose(2, 3, 1, 0)
    if kind == "convT":
        return a.transpose(2, 3, 0, 1)[::-1, ::-1]
    if kind == "dense":
        return a.T
    return a


def _resolve(path: str, available: Mapping[str, np.ndarray], shape: tuple[int, ...]) -> str:
    """The Flax path of a leaf: ``path`` itself, else the unique path that differs only in
    Flax auto-named segments (``Conv_0`` -> any name) and has the flax ``shape``."""
    if path in available:
        return path
    parts = path.split("/")
    hits = []
    for cand, value in available.items():
        cparts = cand.split("/")
        if len(cparts) != len(parts) or tuple(value.shape) != shape:
            continue
        if all(a == b or _AUTO_NAME.match(a) for a, b in zip(parts, cparts, strict=True)):
            hits.append(cand)
    if len(hits) != 1:
        raise KeyError(
            f"cannot find Flax parameter {path!r} (shape {shape}) in the given params "
            f"({'ambiguous: ' + str(hits) if hits else 'no match'})"
        )
    return hits[0]


def _flax_shape(t: torch.Tensor, kind: str) -> tuple[int, ...]:
    return tuple(_to_flax_layout(np.empty(tuple(t.shape), np.float32), kind).shape)


class _Leaf:
    __slots__ = ("kind", "path", "tensor")

    def __init__(self, path: str, tensor: torch.Tensor, kind: str):
        self.path, self.tensor, self.kind = path, tensor, kind


def _leaves(model: _FlaxTwin, root: str) -> tuple[list[_Leaf], list[_Leaf]]:
    """``(param leaves, batch-stat leaves)`` with default Flax paths under ``root``."""
    params, stats = [], []
    for prefix, module in model.flax_modules():
        full = f"{root}/{prefix}" if root else prefix
        for leaf, (tensor, kind) in module.flax_leaves().items():
            params.append(_Leaf(f"{full}/{leaf}", tensor, kind))
        if isinstance(module, FlaxBatchNorm):
            for leaf, tensor in module.flax_stats().items():
                stats.append(_Leaf(f"{full}/{leaf}", tensor, "vec"))
    return params, stats


def _load(leaves: list[_Leaf], flat: Mapping[str, np.ndarray], what: str) -> None:
    """Copy Flax values into the torch tensors (resolving each leaf's real path)."""
    used = set()
    for leaf in leaves:
        path = _resolve(leaf.path, flat, _flax_shape(leaf.tensor, leaf.kind))
        value = _to_torch_layout(np.asarray(flat[path], np.float32), leaf.kind)
        if tuple(value.shape) != tuple(leaf.tensor.shape):
            raise ValueError(
                f"{path}: Flax {flat[path].shape} does not fit torch {leaf.tensor.shape}"
            )
        with torch.no_grad():
            leaf.tensor.copy_(torch.from_numpy(np.array(value, order="C")))
        leaf.path = path
        used.add(path)
    extra = sorted(set(flat) - used)
    if extra:
        raise KeyError(f"{what} the torch twin does not have: {extra}")


def _flax_init(leaves: list[_Leaf], gen: torch.Generator, zero_scale: Iterable[str]) -> None:
    """Flax's default initializers: lecun_normal kernels (truncated normal, fan_in of the Flax
    layout), zero biases, unit BN scales (zero for ``zero_scale`` paths, e.g. the last BN of
    each ResNet block), so a twin built without ``flax_params`` starts like ours."""
    zero = set(zero_scale)
    with torch.no_grad():
        for leaf in leaves:
            t = leaf.tensor
            if leaf.kind in ("conv", "convT", "dense"):
                shape = _flax_shape(t, leaf.kind)
                fan_in = int(np.prod(shape[:-1]))
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
                w = torch.empty(shape).normal_(generator=gen).clamp_(-2.0, 2.0)
                while True:  # resample outside [-2, 2] (truncated normal)
                    bad = (w.abs() >= 2.0).nonzero(as_tuple=True)
                    if not bad[0].numel():
                        break
                    w[bad] = torch.empty(bad[0].numel()).normal_(generator=gen)
                t.copy_(torch.from_numpy(_to_torch_layout((w * std).numpy(), leaf.kind).copy()))
            elif leaf.path.endswith("/scale"):
                t.fill_(0.0 if leaf.path in zero else 1.0)
            else:
                t.zero_()


# ----------------------------------------------------------------------------- training steps


def _nchw(a: Any) -> torch.Tensor:
    a = np.asarray(a, np.float32)
    if a.ndim == 3:
        a = a[..., None]
    return torch.from_numpy(np.array(a.transpose(0, 3, 1, 2), order="C"))


def _as_tensor(a: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.to(dtype)
    return torch.from_numpy(np.array(a)).to(dtype)


def _bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image ``sum`` of sigmoid cross-entropy, ``(B,)``."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return per_pixel.reshape(x.shape[0], -1).sum(dim=1)


def _gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.sum(torch.exp(logvar) + mu.square() - 1.0 - logvar, dim=-1)


class TorchStep:
    """One model's full training step on a fixed batch.

    Attributes:
      name: the :data:`MODELS` entry.
      model: the torch module (``disc`` too for the FactorVAE steps).
      optimizers: the torch optimizers the step uses.

    Methods:
      step(**noise) -> {loss term: float}: forward, loss, backward, optimizer step.
      loss_and_grads(**noise) -> ({loss term: float}, {Flax path: grad in Flax layout}):
        the same loss and its gradients, without updating parameters or BatchNorm averages.
      flax_params() / flax_batch_stats(): the current values, ``{Flax path: np.ndarray}``.
    """

    name: str
    latent_dim: int

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self._params: list[_Leaf] = []
        self._stats: list[_Leaf] = []
        self.optimizers: list[torch.optim.Optimizer] = []

    # the loss: subclasses return (scalar to differentiate, {term: tensor})
    def _loss(self, update: bool, **noise: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def step(self, **noise: Any) -> dict[str, float]:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss, terms = self._loss(update=True, **noise)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def loss_and_grads(
        self, of: str | None = None, **noise: Any
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Loss terms and gradients (Flax paths and layouts) without any update; ``of`` names a
        single term to differentiate instead of the training objective (e.g. ``"ad"``)."""
        loss, terms = self._loss(update=False, **noise)
        if of is not None:
            loss = terms[of]
        tensors = [leaf.tensor for leaf in self._params]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        out = {}
        for leaf, g in zip(self._params, grads, strict=True):
            g = torch.zeros_like(leaf.tensor) if g is None else g
            out[leaf.path] = np.ascontiguousarray(_to_flax_layout(g.detach().numpy(), leaf.kind))
        return {k: float(v.detach()) for k, v in terms.items()}, out

    def flax_params(self) -> dict[str, np.ndarray]:
        return {
            leaf.path: np.ascontiguousarray(
                _to_flax_layout(leaf.tensor.detach().numpy(), leaf.kind)
            )
            for leaf in self._params
        }

    def flax_batch_stats(self) -> dict[str, np.ndarray]:
        return {leaf.path: leaf.tensor.detach().numpy().copy() for leaf in self._stats}

    def _noise(self, eps: Any, shape: tuple[int, ...]) -> torch.Tensor:
        if eps is None:
            return torch.randn(shape, generator=self._gen).to(self.dtype)
        eps = _as_tensor(eps, self.dtype)
        if tuple(eps.shape) != shape:
            raise ValueError(f"noise must have shape {shape}; got {tuple(eps.shape)}")
        return eps

    def _setup(
        self,
        twins: Sequence[tuple[str, _FlaxTwin]],
        flax_params: Any,
        flax_batch_stats: Any,
        seed: int,
        zero_scale: Iterable[str] = (),
    ) -> None:
        self._gen = torch.Generator().manual_seed(seed)
        for _, twin in twins:
            twin.to(self.dtype)  # before collecting leaves: .to() replaces buffer tensors
        for root, twin in twins:
            p, s = _leaves(twin, root)
            self._params += p
            self._stats += s
        if flax_params is not None:
            if isinstance(flax_params, Mapping) and "params" in flax_params:  # variables dict
                flax_batch_stats = flax_params.get("batch_stats", flax_batch_stats)
                flax_params = flax_params["params"]
            _load(self._params, flatten_flax(flax_params), "Flax params")
        else:
            _flax_init(self._params, self._gen, zero_scale)
        if flax_batch_stats is not None:
            _load(self._stats, flatten_flax(flax_batch_stats), "Flax batch_stats")


class VAEStep(TorchStep):
    """``vae_xai.train.vae_update_fn``: ``mean(recon_nll + beta * KL)`` and one Adam step."""

    def __init__(
        self,
        name: str,
        model: _FlaxTwin,
        batch: Mapping[str, Any],
        *,
        lr: float,
        beta: float,
        likelihood: str = "bernoulli",
        variance: float = 0.5,
        flax_params: Any = None,
        flax_batch_stats: Any = None,
        seed: int = 0,
        zero_scale: Iterable[str] = (),
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(dtype)
        self.name, self.model = name, model
        self.latent_dim = model.latent_dim
        self.beta, self.likelihood, self.variance = beta, likelihood, variance
        self.x = _nchw(batch["image"]).to(dtype)
        self._setup([("", model)], flax_params, flax_batch_stats, seed, zero_scale)
        # optax.adam(lr): b1 0.9, b2 0.999, eps 1e-8, eps_root 0 == torch.optim.Adam
        self.optimizers = [
            torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        ]

    def _loss(self, update: bool, eps: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.x
        enc = self.model.encode(x, train=True, update=update)
        mu, logvar = enc["mu"], enc["logvar"]
        z = mu + self._noise(eps, tuple(mu.shape)) * torch.exp(0.5 * logvar)
        logits = self.model.decode(z, train=True, update=update)
        if self.likelihood == "bernoulli":
            rec = _bernoulli_nll(logits, x)
        else:
            diff = x - torch.sigmoid(logits)
            rec = 0.5 * diff.square().reshape(x.shape[0], -1).sum(dim=1) / self.variance
        kl = _gaussian_kl(mu, logvar)
        loss = torch.mean(rec + self.beta * kl)
        return loss, {"loss": loss, "recon": rec.mean(), "kl": kl.mean()}


class FactorVAEStep(TorchStep):
    """``vae_xai.disentangle.factor_vae_loss_fn`` + ``factor_vae_optimizer()``.

    One scalar ``vae_loss(vae; disc frozen) + disc_loss(disc; z frozen)`` is differentiated,
    as in our step; ``ad_weight > 0`` adds ``L_AD`` of the top-2 attention pair at the last
    conv layer (Grad-CAM of the sampled ``z``, second order through the maps).
    """

    def __init__(
        self,
        name: str,
        vae: ConvVAE,
        disc: FactorDiscriminator,
        batch: Mapping[str, Any],
        *,
        gamma: float = 40.0,
        ad_weight: float = 0.0,
        ad_eps: float = 1e-8,
        flax_params: Any = None,
        seed: int = 0,
        vae_lr: float = 1e-4,
        vae_betas: tuple[float, float] = (0.9, 0.999),
        disc_lr: float = 1e-4,
        disc_betas: tuple[float, float] = (0.5, 0.9),
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(dtype)
        self.name, self.model, self.disc = name, vae, disc
        self.latent_dim = vae.latent_dim
        self.gamma, self.ad_weight, self.ad_eps = gamma, ad_weight, ad_eps
        self.x = _nchw(batch["image"]).to(dtype)
        self.x_disc = _nchw(batch["image_disc"]).to(dtype) if "image_disc" in batch else None
        if flax_params is not None and set(flax_params) != {"vae", "disc"}:
            raise ValueError("FactorVAE flax_params must be {'vae': ..., 'disc': ...}")
        self._setup([("vae", vae), ("disc", disc)], flax_params, None, seed)
        self.optimizers = [
            torch.optim.Adam(vae.parameters(), lr=vae_lr, betas=vae_betas, eps=1e-8),
            torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=disc_betas, eps=1e-8),
        ]

    def _attention_ad(
        self, enc: dict[str, torch.Tensor], z: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """Mean ``L_AD`` of the top-2 attention pair (``(B,)`` before the mean)."""
        a = enc[f"conv{len(self.model.convs)}"]  # (B, c, h, w), the feature map
        b, d = z.shape
        hh, ww = a.shape[2:]
        # d z_i / d delta = sum_hw d z_i / dA, all D latents in one batched vjp (create_graph:
        # the maps stay differentiable, second order)
        onehots = torch.eye(d, dtype=z.dtype)[:, None, :].expand(d, b, d)
        (sums,) = torch.autograd.grad(
            z, delta, grad_outputs=onehots, is_grads_batched=True, create_graph=True
        )  # (D, B, c)
        alpha = sums.permute(1, 0, 2) / (hh * ww)  # (B, D, c)
        maps = F.relu(torch.einsum("bdc,bchw->bdhw", alpha, a))
        pairs = torch.topk(maps.detach().sum(dim=(2, 3)), 2, dim=1).indices  # (B, 2)
        chosen = torch.gather(maps, 1, pairs[:, :, None, None].expand(b, 2, hh, ww))
        a1, a2 = chosen[:, 0], chosen[:, 1]
        inter = torch.minimum(a1, a2).sum(dim=(1, 2))
        total = (a1 + a2).sum(dim=(1, 2))
        return 2.0 * inter / (total + self.ad_eps)

    def _loss(
        self, update: bool, eps: Any = None, eps_disc: Any = None, perm: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        del update  # no BatchNorm
        x = self.x
        use_ad = self.ad_weight > 0
        delta = None
        if use_ad:
            delta = torch.zeros(x.shape[0], self.model.feat_c, dtype=x.dtype, requires_grad=True)
        enc = self.model.encode(x, delta=delta)
        mu, logvar = enc["mu"], enc["logvar"]
        z = mu + self._noise(eps, tuple(mu.shape)) * torch.exp(0.5 * logvar)
        logits = self.model.decode(z)
        rec = _bernoulli_nll(logits, x)
        kl = _gaussian_kl(mu, logvar)
        tc_logits = self.disc(z, frozen=True)
        tc = tc_logits[:, 0] - tc_logits[:, 1]
        vae_loss = torch.mean(rec + kl + self.gamma * tc)
        terms = {"recon": rec.mean(), "kl": kl.mean(), "tc": tc.mean()}
        if use_ad:
            terms["ad"] = self._attention_ad(enc, z, delta).mean()
            vae_loss = vae_loss + self.ad_weight * terms["ad"]
        terms["loss"] = vae_loss

        z_q = z.detach()
        if self.x_disc is not None:
            with torch.no_grad():
                enc2 = self.model.encode(self.x_disc)
                noise2 = self._noise(eps_disc, tuple(enc2["mu"].shape))
                z_other = enc2["mu"] + noise2 * torch.exp(0.5 * enc2["logvar"])
        else:
            z_other = z_q
        if perm is None:
            perm = torch.argsort(torch.rand(tuple(z_other.shape), generator=self._gen), dim=0)
        perm = _as_tensor(perm, torch.int64)
        if tuple(perm.shape) != tuple(z_other.shape):
            raise ValueError(f"perm must have shape {tuple(z_other.shape)}; got {perm.shape}")
        z_perm = torch.gather(z_other, 0, perm)
        logits_q = self.disc(z_q)
        logits_p = self.disc(z_perm)
        zeros = torch.zeros(logits_q.shape[0], dtype=torch.int64)
        ones = torch.ones(logits_p.shape[0], dtype=torch.int64)
        d_loss = 0.5 * (F.cross_entropy(logits_q, zeros) + F.cross_entropy(logits_p, ones))
        terms["disc_loss"] = d_loss
        with torch.no_grad():
            terms["disc_acc"] = 0.5 * (
                (logits_q.argmax(-1) == 0).to(x.dtype).mean()
                + (logits_p.argmax(-1) == 1).to(x.dtype).mean()
            )
        return vae_loss + d_loss, terms


# ----------------------------------------------------------------------------- build


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
