"""Flax parameters <-> torch twins: paths, layouts, loading and Flax's default initialization.

Every parameter of a twin is a :class:`Leaf`: its Flax path (``"encoder/fc1/kernel"``), the
torch tensor and its layout kind, which says how the Flax array maps onto the tensor:

* ``"conv"``: Flax Conv kernel HWIO <-> torch OIHW.
* ``"convT"``: Flax ConvTranspose kernel ``(kh, kw, in, out)`` (``lax.conv_transpose``,
  ``transpose_kernel=False``: a correlation of the dilated input) <-> torch ``ConvTranspose2d``
  weight ``(in, out, kh, kw)`` spatially flipped.
* ``"dense"``: Dense ``(in, out)`` <-> Linear ``(out, in)``.
* ``"vec"``: biases, BatchNorm scales and statistics, the same in both.

The twins name their layers with the paths Flax gives by default. Where such a path has an
auto-named segment (``Conv_0``), the given params may name that layer otherwise;
:func:`load_leaves` then takes the unique path that matches every other segment and the
shape, and the leaf keeps that path, so gradients come back keyed exactly like the params.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .layers import FlaxBatchNorm, FlaxTwin

_AUTO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*_\d+$")  # Flax's auto names, e.g. "Conv_0"


def flatten_flax(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Flattens a nested Flax params dict to its leaves keyed by path.

    Args:
      tree: nested mappings of arrays (jax arrays welcome), e.g. Flax ``params``.
      prefix: the path that every key gets in front (``"prefix/..."``); none by default.

    Returns:
      ``{"a/b/kernel": np.ndarray}``.
    """
    flat: dict[str, np.ndarray] = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            flat.update(flatten_flax(v, path))
        else:
            flat[path] = np.asarray(v)
    return flat


def to_torch_layout(a: np.ndarray, kind: str) -> np.ndarray:
    """A Flax array in the torch layout of ``kind`` (see the module docstring); may be a view.

    Args:
      a: the array as Flax holds it.
      kind: ``"conv"``, ``"convT"``, ``"dense"`` or ``"vec"``.

    Returns:
      The array as the torch tensor holds it.
    """
    if kind == "conv":  # HWIO -> OIHW
        return a.transpose(3, 2, 0, 1)
    if kind == "convT":  # (kh, kw, in, out), lax correlation -> (in, out, kh, kw), flipped
        return a[::-1, ::-1].transpose(2, 3, 0, 1)
    if kind == "dense":  # (in, out) -> (out, in)
        return a.T
    return a


def to_flax_layout(a: np.ndarray, kind: str) -> np.ndarray:
    """Inverse of :func:`to_torch_layout`; may be a view.

    Args:
      a: the array as the torch tensor holds it.
      kind: ``"conv"``, ``"convT"``, ``"dense"`` or ``"vec"``.

    Returns:
      The array as Flax holds it.
    """
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
    """The shape Flax gives the parameter that torch holds as ``t``."""
    return tuple(to_flax_layout(np.empty(tuple(t.shape), np.float32), kind).shape)


class Leaf:
    """One parameter or statistic of a twin: its Flax ``path``, torch ``tensor`` and layout
    ``kind``."""

    __slots__ = ("kind", "path", "tensor")

    def __init__(self, path: str, tensor: torch.Tensor, kind: str):
        self.path, self.tensor, self.kind = path, tensor, kind


def collect_leaves(model: FlaxTwin, root: str) -> tuple[list[Leaf], list[Leaf]]:
    """The leaves of a twin, with its default Flax paths.

    Args:
      model: the twin.
      root: the path prefix of the twin's subtree (``"vae"``, ``"disc"``), ``""`` for none.

    Returns:
      ``(param leaves, batch-stat leaves)``, the latter from its BatchNorm layers.
    """
    params, stats = [], []
    for prefix, module in model.flax_modules():
        full = f"{root}/{prefix}" if root else prefix
        for leaf, (tensor, kind) in module.flax_leaves().items():
            params.append(Leaf(f"{full}/{leaf}", tensor, kind))
        if isinstance(module, FlaxBatchNorm):
            for leaf, tensor in module.flax_stats().items():
                stats.append(Leaf(f"{full}/{leaf}", tensor, "vec"))
    return params, stats


def load_leaves(leaves: list[Leaf], flat: Mapping[str, np.ndarray], what: str) -> None:
    """Copies Flax values into the leaves' tensors and sets each leaf's path to the real one.

    Args:
      leaves: from :func:`collect_leaves`.
      flat: the Flax values, ``{path: array}`` (:func:`flatten_flax`).
      what: names ``flat`` in the error raised when it has values that no leaf takes.

    Raises:
      KeyError: a leaf has no (or no unique) Flax value, or ``flat`` has values left over.
      ValueError: a value does not fit its tensor.
    """
    used = set()
    for leaf in leaves:
        path = _resolve(leaf.path, flat, _flax_shape(leaf.tensor, leaf.kind))
        value = to_torch_layout(np.asarray(flat[path], np.float32), leaf.kind)
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


def flax_init(leaves: list[Leaf], gen: torch.Generator, zero_scale: Iterable[str]) -> None:
    """Initializes the leaves with Flax's default initializers, so that a twin built without
    Flax params starts like our models do (same distributions; the draws are torch's).

    lecun_normal kernels (truncated normal, fan_in of the Flax layout), zero biases, unit BN
    scales (zero for the ``zero_scale`` paths, e.g. the last BN of each ResNet block).

    Args:
      leaves: the parameter leaves (:func:`collect_leaves`).
      gen: the torch generator the kernels are drawn with.
      zero_scale: paths of the BN scales that start at zero.
    """
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
                t.copy_(torch.from_numpy(to_torch_layout((w * std).numpy(), leaf.kind).copy()))
            elif leaf.path.endswith("/scale"):
                t.fill_(0.0 if leaf.path in zero else 1.0)
            else:
                t.zero_()
