"""Strided and transposed convolutions with fast gradients on XLA CPU, exact everywhere.

On XLA's CPU backend a convolution whose *input* is dilated is the slow path: the kernel gradient
of every ``lax.conv_transpose`` (every decoder upsampling), the input gradient of a strided
convolution (itself a transposed convolution) and some transposed-conv forwards run several
times slower than the same arithmetic written as stride-1 convolutions (per layer of our models:
``benchmarks/conv_layers.py``; whole training steps: RESULTS.md, section "Training-step
throughput on CPU: ours vs the same model in PyTorch"). XLA's strided forward and its
kernel-dilated kernel-gradient convolutions are fast. This module keeps every
pass on a fast formulation with two mutually recursive ``jax.custom_vjp`` rules:

* :func:`fast_strided_conv` (``lax.conv_general_dilated`` with strides): forward is XLA's; the
  input gradient is :func:`fast_conv_transpose` of ``dy`` with the flipped kernel; the kernel
  gradient is XLA's.
* :func:`fast_conv_transpose` (``lax.conv_transpose``, ``transpose_kernel=False``, as
  ``flax.linen.ConvTranspose`` calls it): the forward is the sub-pixel form
  (:func:`conv_transpose`: every output phase ``(s*q + r)`` is a stride-1 correlation of ``x``
  with that phase's taps, all phases one stride-1 conv to ``s_h * s_w * out`` channels, then
  depth-to-space) for output planes of at least :data:`SUBPIXEL_MIN_PIXELS`, XLA's own below;
  the input gradient is :func:`fast_strided_conv` of ``dy``; the kernel gradient comes by
  duality: ``<T(x, w), dy> = <x, S(dy, flip_swap(w))>``, so it is the kernel gradient of a
  strided conv ``S``, which XLA computes fast.

A stride-1 conv to fewer than :data:`MIN_OUT_CHANNELS` output channels (a decoder's last conv
to 1 or 3 channels) is also off XLA CPU's fast path; the fast :class:`Conv` pads its kernel to
:data:`MIN_OUT_CHANNELS` output channels and slices the result (exact: the padded outputs never
reach the loss).

The backward rules are written in the same functions, so second-order gradients (the attention
disentanglement loss differentiates a vjp) stay exact; ``vmap`` composes. Forward mode
(``jvp``, ``jacfwd``) is not defined for ``custom_vjp``: use ``impl="xla"`` there.

:class:`ConvTranspose` and :class:`Conv` are drop-in replacements for the Flax layers: same
parameter names, shapes, initializers and outputs (to float rounding), so checkpoints of the
plain layers restore into them. ``impl="auto"`` (the default) uses the fast rules when the
default backend is CPU and the plain XLA ops elsewhere (on GPU/TPU, cuDNN and the TPU compiler
already run these at full speed); ``"xla"`` and ``"fast"`` force one.

Shapes are ``(B, H, W, C)`` inputs and ``(kh, kw, C_in, C_out)`` kernels throughout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

__all__ = [
    "MIN_OUT_CHANNELS",
    "SUBPIXEL_MIN_PIXELS",
    "Conv",
    "ConvTranspose",
    "Impl",
    "conv_transpose",
    "conv_transpose_padding",
    "fast_conv_transpose",
    "fast_strided_conv",
    "resolve_impl",
]

Impl = Literal["auto", "xla", "fast"]
Padding = str | Sequence[tuple[int, int]]
_DN = ("NHWC", "HWIO", "NHWC")


def resolve_impl(impl: Impl) -> Literal["xla", "fast"]:
    """Resolve ``"auto"`` to ``"fast"`` on the CPU backend and ``"xla"`` on GPU/TPU.

    Args:
      impl: ``"auto"``, ``"xla"`` or ``"fast"``.

    Returns:
      ``"xla"`` or ``"fast"``.

    Raises:
      ValueError: any other ``impl``.
    """
    if impl == "auto":
        return "fast" if jax.default_backend() == "cpu" else "xla"
    if impl not in ("xla", "fast"):
        raise ValueError(f'impl must be "auto", "xla" or "fast"; got {impl!r}')
    return impl


def _pairs(padding: Padding, n: int, what: str) -> list[tuple[int, int]] | str:
    if isinstance(padding, str):
        p = padding.upper()
        if p not in ("SAME", "VALID"):
            raise ValueError(
                f'{what}: padding must be "SAME", "VALID" or (lo, hi) pairs; got {padding!r}'
            )
        return p
    pairs = [tuple(int(v) for v in p) for p in padding]
    if len(pairs) != n or any(len(p) != 2 for p in pairs):
        raise ValueError(f"{what}: padding needs {n} (lo, hi) pairs; got {padding!r}")
    return pairs  # type: ignore[return-value]


def conv_transpose_padding(k: int, s: int, padding: str | tuple[int, int]) -> tuple[int, int]:
    """Padding of the dilated input that ``lax.conv_transpose`` uses for one spatial dim.

    Args:
      k: kernel size.
      s: stride.
      padding: ``"SAME"``, ``"VALID"`` or an explicit ``(lo, hi)`` (applied as given).

    Returns:
      ``(lo, hi)``.
    """
    if padding == "SAME":
        pad_len = k + s - 2
        pad_a = k - 1 if s > k - 1 else int(math.ceil(pad_len / 2))
        return pad_a, pad_len - pad_a
    if padding == "VALID":
        pad_len = k + s - 2 + max(k - s, 0)
        return k - 1, pad_len - (k - 1)
    lo, hi = padding  # explicit pairs are applied to the dilated input as given
    return int(lo), int(hi)


def _check_4d(x: jax.Array, kernel: jax.Array, what: str) -> None:
    if x.ndim != 4 or kernel.ndim != 4:
        raise ValueError(
            f"{what}: expected x (B, H, W, C) and kernel (kh, kw, C_in, C_out); "
            f"got x {x.shape}, kernel {kernel.shape}"
        )
    if x.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"{what}: x has {x.shape[-1]} channels but the kernel expects {kernel.shape[2]}"
        )


def _phase_taps(k: int, s: int, pad_lo: int) -> tuple[np.ndarray, int]:
    """Tap table of the sub-pixel form of one dim of a transposed convolution.

    Output pixel ``s*q + r`` of ``conv(dilate(x, s), w, pad_lo)`` is
    ``sum_u x[q + u + c_min] * w[idx[r, u]]`` (``idx == k`` means a zero tap). Returns
    ``(idx (s, U), c_min)``.
    """
    phases = []
    for r in range(s):
        t0 = (pad_lo - r) % s
        taps = list(range(t0, k, s))
        c = (r + t0 - pad_lo) // s  # exact: r + t0 - pad_lo is a multiple of s
        phases.append((c, taps))
    c_min = min(c for c, taps in phases if taps) if any(t for _, t in phases) else 0
    c_max = max((c + len(t) - 1 for c, t in phases if t), default=c_min)
    u = c_max - c_min + 1
    idx = np.full((s, u), k, dtype=np.int32)
    for r, (c, taps) in enumerate(phases):
        for m, t in enumerate(taps):
            idx[r, c - c_min + m] = t
    return idx, c_min


def conv_transpose(
    x: ArrayLike,
    kernel: ArrayLike,
    strides: Sequence[int],
    padding: Padding,
    *,
    precision: Any = None,
) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, padding)`` as one stride-1 conv + depth-to-space.

    Args:
      x: ``(B, H, W, C_in)``.
      kernel: ``(kh, kw, C_in, C_out)`` (Flax ``ConvTranspose`` layout, not flipped).
      strides: ``(s_h, s_w)``.
      padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))`` as for ``lax.conv_transpose``.
      precision: ``lax`` precision of the stride-1 conv.

    Returns:
      ``(B, H_out, W_out, C_out)``, equal to ``lax.conv_transpose`` up to float rounding.

    Raises:
      ValueError: non-4-D operands, mismatched channels, bad padding, or a padding that
        leaves no output.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    _check_4d(x, kernel, "conv_transpose")
    pad = _pairs(padding, 2, "conv_transpose")
    (kh, kw, cin, cout), (sh, sw) = kernel.shape, tuple(int(s) for s in strides)
    n_in = x.shape[1:3]
    tables, pads, sizes = [], [], []
    for d, (k, s) in enumerate(((kh, sh), (kw, sw))):
        lo, hi = conv_transpose_padding(k, s, pad if isinstance(pad, str) else pad[d])
        out = (n_in[d] - 1) * s + 1 + lo + hi - k + 1
        if out <= 0:
            raise ValueError(f"conv_transpose: padding {padding!r} leaves no output along dim {d}")
        idx, c_min = _phase_taps(k, s, lo)
        q = -(-out // s)  # rows per phase (ceil); the extra ones are cropped
        u = idx.shape[1]
        tables.append(idx)
        pads.append((-c_min, c_min + q + u - 1 - n_in[d]))  # may be negative (a crop)
        sizes.append(out)
    # Combined kernel (U_h, U_w, C_in, s_h * s_w * C_out); index k means a zero tap.
    kpad = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))
    ih, iw = tables
    wc = kpad[ih[:, :, None, None], iw[None, None, :, :]]  # (s_h, U_h, s_w, U_w, C_in, C_out)
    wc = wc.transpose(1, 3, 4, 0, 2, 5).reshape(ih.shape[1], iw.shape[1], cin, sh * sw * cout)
    zero = jnp.zeros((), x.dtype)
    xp = lax.pad(x, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    y = lax.conv_general_dilated(
        xp, wc, (1, 1), "VALID", dimension_numbers=_DN, precision=precision
    )  # (B, Q_h, Q_w, s_h * s_w * C_out)
    b, qh, qw, _ = y.shape
    y = y.reshape(b, qh, qw, sh, sw, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, qh * sh, qw * sw, cout)[:, : sizes[0], : sizes[1], :]


def _conv_padding(n: int, k: int, s: int, padding: str | tuple[int, int]) -> tuple[int, int]:
    """``(lo, hi)`` that ``lax.conv_general_dilated`` applies for one dim (stride ``s``)."""
    if padding == "VALID":
        return 0, 0
    if padding == "SAME":
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        return total // 2, total - total // 2
    lo, hi = padding
    return int(lo), int(hi)


Pads = tuple[tuple[int, int], tuple[int, int]]


def _flip_swap(kernel: jax.Array) -> jax.Array:
    """``(kh, kw, a, b) -> (kh, kw, b, a)``, spatial axes reversed: the adjoint's kernel."""
    return jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)


def _xla_strided(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Pads, precision):
    # Explicit pads may be negative (a crop): lax.pad handles those, the conv then pads nothing.
    zero = jnp.zeros((), x.dtype)
    if any(p < 0 for pair in pads for p in pair):
        x = lax.pad(x, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
        pads = ((0, 0), (0, 0))
    return lax.conv_general_dilated(
        x, kernel, strides, pads, dimension_numbers=_DN, precision=precision
    )


# Output planes at least this large (pixels) run the transposed conv in the sub-pixel form; below
# it XLA's own lhs-dilated convolution is as fast or faster (the threshold comes from timing every
# layer of our models on CPU: ``benchmarks/conv_layers.py``).
SUBPIXEL_MIN_PIXELS = 1024


def _transposed_forward(x, kernel, strides, pads, precision):
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    oh = (x.shape[1] - 1) * sh + 1 + sum(pads[0]) - kh + 1
    ow = (x.shape[2] - 1) * sw + 1 + sum(pads[1]) - kw + 1
    if oh * ow >= SUBPIXEL_MIN_PIXELS:
        return conv_transpose(x, kernel, strides, pads, precision=precision)
    return lax.conv_general_dilated(
        x, kernel, (1, 1), pads, lhs_dilation=strides, dimension_numbers=_DN, precision=precision
    )


def _adjoint_of_strided(n: tuple[int, int], kernel_hw, strides, pads: Pads, out_hw) -> Pads:
    """Dilated-input pads of the transposed conv that is the input-adjoint of a strided conv."""
    res = []
    for d in range(2):
        k, s, (lo, _), m = kernel_hw[d], strides[d], pads[d], out_hw[d]
        p_lo = k - 1 - lo
        res.append((p_lo, n[d] + k - 2 - (m - 1) * s - p_lo))
    return tuple(res)  # type: ignore[return-value]


def _adjoint_of_transposed(n: tuple[int, int], kernel_hw, strides, pads: Pads, out_hw) -> Pads:
    """Pads of the strided conv that is the input-adjoint of a transposed conv (input size n)."""
    res = []
    for d in range(2):
        k, s, (p_lo, _), m = kernel_hw[d], strides[d], pads[d], out_hw[d]
        lo = k - 1 - p_lo
        res.append((lo, s * (n[d] - 1) + k - m - lo))
    return tuple(res)  # type: ignore[return-value]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fast_strided(x, kernel, strides, pads, precision):
    return _xla_strided(x, kernel, strides, pads, precision)


def _fast_strided_fwd(x, kernel, strides, pads, precision):
    return _xla_strided(x, kernel, strides, pads, precision), (x, kernel)


def _fast_strided_bwd(strides, pads, precision, res, dy):
    x, kernel = res
    # Input gradient: a transposed conv of dy (the slow op on XLA CPU, so ours).
    adj = _adjoint_of_strided(x.shape[1:3], kernel.shape[:2], strides, pads, dy.shape[1:3])
    dx = _fast_transposed(dy, _flip_swap(kernel), strides, adj, precision)
    # Kernel gradient: XLA's own (a kernel-dilated conv, fast on CPU).
    _, vjp = jax.vjp(lambda k: _xla_strided(x, k, strides, pads, precision), kernel)
    return dx, vjp(dy)[0]


_fast_strided.defvjp(_fast_strided_fwd, _fast_strided_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _fast_transposed(x, kernel, strides, pads, precision):
    return _transposed_forward(x, kernel, strides, pads, precision)


def _fast_transposed_fwd(x, kernel, strides, pads, precision):
    return _transposed_forward(x, kernel, strides, pads, precision), (x, kernel)


def _fast_transposed_bwd(strides, pads, precision, res, dy):
    x, kernel = res
    adj = _adjoint_of_transposed(x.shape[1:3], kernel.shape[:2], strides, pads, dy.shape[1:3])
    # Input gradient: a strided conv of dy with the flipped kernel (fast natively).
    dx = _fast_strided(dy, _flip_swap(kernel), strides, adj, precision)
    # Kernel gradient by duality: <T(x, w), dy> = <x, S(dy, flip_swap(w))>, so dL/dw is the
    # kernel gradient of that strided conv S at cotangent x -- XLA's fast kernel-dilated conv,
    # where differentiating T directly gives an input-dilated one (the slow path on CPU).
    _, vjp = jax.vjp(lambda k: _xla_strided(dy, _flip_swap(k), strides, adj, precision), kernel)
    return dx, vjp(x)[0]


_fast_transposed.defvjp(_fast_transposed_fwd, _fast_transposed_bwd)


def fast_strided_conv(
    x: ArrayLike,
    kernel: ArrayLike,
    strides: Sequence[int],
    padding: Padding,
    *,
    precision: Any = None,
) -> jax.Array:
    """``lax.conv_general_dilated(x, kernel, strides, padding)`` (NHWC/HWIO) with fast gradients.

    The forward pass is XLA's; the input gradient (a transposed convolution) runs through
    :func:`fast_conv_transpose` and the kernel gradient through XLA's kernel-dilated conv.
    Reverse mode only (``custom_vjp``): use ``lax`` directly for ``jvp``/``jacfwd``.

    Args:
      x: ``(B, H, W, C_in)``.
      kernel: ``(kh, kw, C_in, C_out)``.
      strides: ``(s_h, s_w)``.
      padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))``.
      precision: ``lax`` precision.

    Returns:
      ``(B, H_out, W_out, C_out)``.

    Raises:
      ValueError: non-4-D operands, mismatched channels or bad padding.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    _check_4d(x, kernel, "fast_strided_conv")
    pad = _pairs(padding, 2, "fast_strided_conv")
    strides = tuple(int(s) for s in strides)
    pads = tuple(
        _conv_padding(
            x.shape[1 + d], kernel.shape[d], strides[d], pad if isinstance(pad, str) else pad[d]
        )
        for d in range(2)
    )
    return _fast_strided(x, kernel, strides, pads, precision)


def fast_conv_transpose(
    x: ArrayLike,
    kernel: ArrayLike,
    strides: Sequence[int],
    padding: Padding,
    *,
    precision: Any = None,
) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, padding)`` with a fast forward and fast gradients.

    Forward: the sub-pixel form (:func:`conv_transpose`) for output planes of at least
    ``SUBPIXEL_MIN_PIXELS`` pixels, XLA's input-dilated conv below. Input gradient: a strided
    conv (:func:`fast_strided_conv`). Kernel gradient: by duality, the kernel gradient of that
    strided conv. Reverse mode only (``custom_vjp``).

    Args:
      x: ``(B, H, W, C_in)``.
      kernel: ``(kh, kw, C_in, C_out)`` (Flax ``ConvTranspose`` layout, not flipped).
      strides: ``(s_h, s_w)``.
      padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))`` as for ``lax.conv_transpose``.
      precision: ``lax`` precision.

    Returns:
      ``(B, H_out, W_out, C_out)``, equal to ``lax.conv_transpose`` up to float rounding.

    Raises:
      ValueError: non-4-D operands, mismatched channels or bad padding.
    """
    x, kernel = jnp.asarray(x), jnp.asarray(kernel)
    _check_4d(x, kernel, "fast_conv_transpose")
    pad = _pairs(padding, 2, "fast_conv_transpose")
    strides = tuple(int(s) for s in strides)
    pads = tuple(
        conv_transpose_padding(kernel.shape[d], strides[d], pad if isinstance(pad, str) else pad[d])
        for d in range(2)
    )
    return _fast_transposed(x, kernel, strides, pads, precision)


def _conv_general_dilated(impl: Impl):
    """A ``conv_general_dilated`` for ``flax.linen.Conv`` that routes strided 2-D convs."""

    def conv(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=None,
        rhs_dilation=None,
        dimension_numbers=None,
        feature_group_count=1,
        precision=None,
        **kwargs,
    ):
        plain = (
            resolve_impl(impl) == "xla"
            or lhs.ndim != 4
            or all(s == 1 for s in window_strides)
            or any(d != 1 for d in (lhs_dilation or (1,)))
            or any(d != 1 for d in (rhs_dilation or (1,)))
            or feature_group_count != 1
            or kwargs
        )
        if plain:
            if resolve_impl(impl) == "fast" and _narrow_stride1(
                lhs, rhs, window_strides, lhs_dilation, rhs_dilation, feature_group_count, kwargs
            ):
                return _padded_out_conv(
                    lhs, rhs, padding, rhs_dilation, dimension_numbers, precision
                )
            return lax.conv_general_dilated(
                lhs,
                rhs,
                window_strides,
                padding,
                lhs_dilation=lhs_dilation,
                rhs_dilation=rhs_dilation,
                dimension_numbers=dimension_numbers,
                feature_group_count=feature_group_count,
                precision=precision,
                **kwargs,
            )
        return fast_strided_conv(lhs, rhs, window_strides, padding, precision=precision)

    return conv


# A stride-1 conv to fewer output channels than this (e.g. a decoder's last conv to 3 RGB or 1
# grey channels) runs off XLA CPU's fast convolution path, and is slower than the same conv
# padded to this many output channels (zero kernel columns, sliced off after). Not applied to the
# sub-pixel conv of a transposed conv to 1 channel (4 phase channels), where padding does not pay.
# Padding the kernel is exact: the sliced-off outputs never reach the loss, so their kernel
# columns get no gradient.
MIN_OUT_CHANNELS = 8


def _narrow_stride1(lhs, rhs, strides, lhs_dilation, rhs_dilation, groups, kwargs) -> bool:
    return (
        lhs.ndim == 4
        and all(s == 1 for s in strides)
        and all(d == 1 for d in (lhs_dilation or (1,)))
        and groups == 1
        and not kwargs
        and 0 < rhs.shape[-1] < MIN_OUT_CHANNELS
    )


def _padded_out_conv(lhs, rhs, padding, rhs_dilation, dimension_numbers, precision):
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    out_axis = dn.rhs_spec[0]
    n_out = rhs.shape[out_axis]
    if out_axis != rhs.ndim - 1:  # only the HWIO layout Flax uses is padded
        return lax.conv_general_dilated(
            lhs,
            rhs,
            (1, 1),
            padding,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            precision=precision,
        )
    wide = jnp.pad(rhs, [(0, 0)] * (rhs.ndim - 1) + [(0, MIN_OUT_CHANNELS - n_out)])
    y = lax.conv_general_dilated(
        lhs,
        wide,
        (1, 1),
        padding,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        precision=precision,
    )
    return lax.slice_in_dim(y, 0, n_out, axis=dn.out_spec[1])


_CONV_FNS: dict[str, Any] = {}


def _conv_fn(impl: Impl):
    # One function object per impl, so Flax module attributes compare and hash stably.
    if impl not in _CONV_FNS:
        _CONV_FNS[impl] = _conv_general_dilated(impl)
    return _CONV_FNS[impl]


def Conv(*args: Any, impl: Impl = "auto", **kwargs: Any) -> nn.Conv:  # noqa: N802
    """``flax.linen.Conv`` whose strided 2-D convolutions run as stride-1 convs on CPU.

    Same parameters (``kernel``, ``bias``), shapes, initializers and outputs as ``nn.Conv``;
    it *is* an ``nn.Conv`` (with its ``conv_general_dilated`` hook set), so everything
    ``nn.Conv`` accepts works, and any configuration the fast path does not cover (dilation,
    feature groups, 1-D/3-D) uses ``lax.conv_general_dilated`` unchanged.

    Args:
      *args: positional arguments of ``nn.Conv`` (``features``, ``kernel_size``, ...).
      impl: ``"auto"``, ``"xla"`` or ``"fast"`` (see :func:`resolve_impl`).
      **kwargs: keyword arguments of ``nn.Conv``.

    Returns:
      The ``nn.Conv`` module.

    Raises:
      ValueError: an unknown ``impl``.
    """
    resolve_impl(impl)  # validate early
    return nn.Conv(*args, conv_general_dilated=_conv_fn(impl), **kwargs)


class ConvTranspose(nn.ConvTranspose):
    """``flax.linen.ConvTranspose`` computed as a stride-1 conv + depth-to-space on CPU.

    Same parameters, shapes, initializers and outputs (to float rounding) as
    ``nn.ConvTranspose``. The fast path covers 2-D inputs with ``SAME``/``VALID``/explicit
    padding and no kernel dilation, mask or ``transpose_kernel``; anything else (and
    ``impl="xla"``) defers to ``nn.ConvTranspose`` itself.

    Attributes:
      impl: ``"auto"``, ``"xla"`` or ``"fast"`` (see :func:`resolve_impl`); the other
        attributes are ``nn.ConvTranspose``'s.
    """

    impl: Impl = "auto"

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        ks = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else self.kernel_size
        dil = self.kernel_dilation
        fast = (
            resolve_impl(self.impl) == "fast"
            and inputs.ndim == 4
            and len(ks) == 2
            and self.mask is None
            and not self.transpose_kernel
            and (dil is None or all(d == 1 for d in np.broadcast_to(dil, (2,))))
            and not (isinstance(self.padding, str) and self.padding.upper() == "CIRCULAR")
        )
        if not fast:
            return super().__call__(inputs)
        strides = tuple(np.broadcast_to(1 if self.strides is None else self.strides, (2,)))
        kernel = self.param(
            "kernel", self.kernel_init, (*ks, inputs.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        padding = nn.linear.canonicalize_padding(self.padding, 2)
        y = fast_conv_transpose(inputs, kernel, strides, padding, precision=self.precision)
        if bias is not None:
            y = y + bias.reshape(1, 1, 1, -1)
        return y
