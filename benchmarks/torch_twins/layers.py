"""Torch layers that compute exactly what their Flax counterparts compute, on NCHW tensors.

Each layer knows its Flax parameter names and layouts (``flax_leaves``), which is what lets
:mod:`.weights` copy Flax parameters in and report gradients back in Flax's layout.

Padding follows ``lax`` exactly: ``"SAME"`` -> ``(total // 2, total - total // 2)``;
``"REFLECT"`` -> ``((k-1)//2, k//2)`` reflected; a ConvTranspose pads its dilated input, which
torch expresses as ``padding = k - 1 - lo``, ``output_padding = hi - lo``. Our Flax models
flatten NHWC row-major, so the twins flatten with :func:`nhwc_flatten` (and unflatten with
:func:`nchw_unflatten`), which makes the Dense weights identical.

BatchNorm is Flax's: batch statistics in train mode, running averages updated with Flax's
momentum (0.9 = torch's 0.1) and the *biased* batch variance (torch's own update uses the
unbiased one; corrected here on the ``C``-sized buffers, so exact at negligible cost).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
    """An int or ``((lo, hi), (lo, hi))`` padding as a ``(lo, hi)`` pair per spatial dim."""
    if isinstance(padding, int):
        return [(padding, padding)] * 2
    return [(int(lo), int(hi)) for lo, hi in padding]


# ----------------------------------------------------------------------------- layers


class FlaxConv(nn.Module):
    """``flax.linen.Conv`` (or our ``fast_conv.Conv``) on NCHW tensors.

    ``padding``: ``"SAME"``, ``"VALID"``, ``"REFLECT"``, an int, or ``((lo, hi), (lo, hi))``;
    ``in_hw`` is the input's spatial size (needed to resolve "SAME"); ``out_hw`` is the output's.
    Symmetric pads go into ``Conv2d`` itself (fused for zeros); asymmetric ones, which
    ``Conv2d`` cannot express, are an explicit ``F.pad`` first.
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
        """``{Flax leaf name: (torch tensor, layout kind)}``; kinds as in :mod:`.weights`."""
        leaves = {"kernel": (self.conv.weight, "conv")}
        if self.conv.bias is not None:
            leaves["bias"] = (self.conv.bias, "vec")
        return leaves


class FlaxConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose`` (``transpose_kernel=False``) on NCHW tensors.

    ``lax.conv_transpose`` pads the stride-dilated input by ``(lo, hi)``; torch's
    ``ConvTranspose2d`` expresses that as ``padding = k - 1 - lo`` and ``output_padding = hi -
    lo``, so only pads with ``0 <= k - 1 - lo`` and ``0 <= hi - lo < stride`` are accepted.
    ``in_hw`` is the input's spatial size; ``out_hw`` is the output's.
    """

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
        """``{Flax leaf name: (torch tensor, layout kind)}``; kinds as in :mod:`.weights`."""
        leaves = {"kernel": (self.conv.weight, "convT")}
        if self.conv.bias is not None:
            leaves["bias"] = (self.conv.bias, "vec")
        return leaves


class FlaxDense(nn.Linear):
    """``flax.linen.Dense``: torch Linear whose weight is the transposed Flax kernel."""

    def flax_leaves(self) -> dict[str, tuple[torch.Tensor, str]]:
        """``{Flax leaf name: (torch tensor, layout kind)}``; kinds as in :mod:`.weights`."""
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
        """``{Flax leaf name: (torch tensor, layout kind)}``; kinds as in :mod:`.weights`."""
        return {"scale": (self.weight, "vec"), "bias": (self.bias, "vec")}

    def flax_stats(self) -> dict[str, torch.Tensor]:
        """The running averages under their Flax ``batch_stats`` leaf names."""
        return {"mean": self.running_mean, "var": self.running_var}


def nhwc_flatten(h: torch.Tensor) -> torch.Tensor:
    """Flattens like our Flax models, which flatten NHWC row-major.

    Args:
      h: ``(B, C, H, W)``.

    Returns:
      ``(B, H * W * C)`` in ``(h, w, c)`` order.
    """
    return h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)


def nchw_unflatten(h: torch.Tensor, hw: tuple[int, int], c: int) -> torch.Tensor:
    """Inverse of :func:`nhwc_flatten`.

    Args:
      h: ``(B, h * w * c)`` in ``(h, w, c)`` order.
      hw: the spatial size ``(h, w)``.
      c: the number of channels.

    Returns:
      ``(B, c, h, w)``.
    """
    return h.reshape(h.shape[0], hw[0], hw[1], c).permute(0, 3, 1, 2)


class FlaxTwin(nn.Module):
    """A torch module whose parameters carry their Flax paths (:meth:`flax_modules`).

    Subclasses (the model twins) also have ``latent_dim`` and ``encode(x, **kw) -> {"mu",
    "logvar", feature maps}`` / ``decode(z, **kw) -> logits``, which :mod:`.steps` calls; the
    twins without BatchNorm accept and ignore its ``train`` / ``update`` keywords, so every
    twin is called alike.
    """

    def flax_modules(self) -> Iterable[tuple[str, nn.Module]]:
        """``(default Flax path prefix, layer)`` for every parameterized layer."""
        raise NotImplementedError
