"""Split any Flax Linen encoder at a named submodule, without editing it.

Attention needs the encoder as two pieces: ``features = f(x)`` at a conv layer and
``(mu, logvar) = head_fn(features)``. :func:`split_encoder` gets both from an unmodified Linen
module with :func:`flax.linen.intercept_methods`: one interceptor records the named
submodule's output, another replaces it with the given feature map so that everything
downstream is a function of it. Under ``jax.jit`` the upstream computation that the
replacement makes unused is removed by XLA, so ``head_fn`` costs only the head.

``layer`` names the submodule whose ``__call__`` output is the feature map: either its name
(e.g. ``"conv2"``; must be unique in the module tree) or its full path joined by ``/``
(e.g. ``"encoder/conv2"``). Pick the submodule whose output is the activation you want (for
Grad-CAM usually post-ReLU; wrap conv + activation in a small module if your model applies
the activation as a function). The layer must be called exactly once per forward pass: a
submodule applied twice (weight sharing) has no single feature map, and replacing it would
replace both calls, so :func:`split_encoder` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_xai.encoder_split.common import EncoderSplit, OutputsFn, default_outputs

__all__ = ["split_encoder"]


def _matcher(layer: str) -> Callable[[nn.Module], bool]:
    parts = tuple(p for p in layer.split("/") if p)
    if not parts:
        raise ValueError("layer must be a non-empty submodule name or path")

    def matches(module: nn.Module) -> bool:
        path = tuple(module.path)
        if len(parts) == 1:
            return bool(path) and path[-1] == parts[0]
        return path == parts

    return matches


def split_encoder(
    module: nn.Module,
    variables: Mapping[str, Any],
    x: jax.Array,
    *,
    layer: str,
    method: str | Callable[..., Any] | None = None,
    outputs: OutputsFn = default_outputs,
    dense_after: str | None = None,
    **apply_kwargs: Any,
) -> EncoderSplit:
    """Split ``module.apply(variables, x, method=method)`` at submodule ``layer``.

    Args:
      module: any Flax Linen module (not edited).
      variables: its variables (``{"params": ..., "batch_stats": ...}``). Use inference mode
        (e.g. ``train=False`` via ``apply_kwargs``) so the head acts per sample.
      x: the input batch.
      layer: name or ``/``-joined path of the submodule whose output is the feature map.
      method: the module method to run (e.g. ``"encode"``); default ``__call__``.
      outputs: maps the method's output to ``(mu, logvar)``.
      dense_after: name/path of an ``nn.Dense`` that consumes ``flatten(A)`` (row-major over
        ``h, w, c``) directly. Enables the exact fast path for all-latent attention. The
        Dense's input size is checked against ``h * w * c``; correctness of the flatten order
        is the caller's promise (the tests check it for vae_xai's own models).
      **apply_kwargs: extra keyword arguments for ``module.apply`` (e.g. ``train=False``).

    Returns:
      An :class:`EncoderSplit`.

    Raises:
      ValueError: ``x`` has no images; ``layer`` is not called, is ambiguous (matches two
        submodules), is called more than once, or does not return a ``(B, h, w, c)`` map.
    """
    shape = getattr(x, "shape", None)
    if shape is not None and (len(shape) == 0 or shape[0] == 0):
        raise ValueError(
            f"x must be a batch of at least one image (B, ...); got shape {tuple(shape)}"
        )
    is_layer = _matcher(layer)
    found: dict[str, Any] = {"calls": 0}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and is_layer(context.module):
            path = "/".join(context.module.path)
            if "features" in found and found["path"] != path:
                raise ValueError(
                    f"layer={layer!r} is ambiguous: it matches both {found['path']!r} and "
                    f"{path!r}; pass the full path"
                )
            found.setdefault("features", out)
            found["path"] = path
            found["calls"] += 1
        return out

    def run(interceptor):
        with nn.intercept_methods(interceptor):
            return module.apply(variables, x, method=method, **apply_kwargs)

    full_out = run(record)
    if "features" not in found:
        raise ValueError(
            f"layer={layer!r} was not called while running {type(module).__name__}"
            f"{'.' + method if isinstance(method, str) else ''}; check the submodule name "
            "(Flax names submodules like 'Conv_0' unless given name=...)"
        )
    if found["calls"] > 1:
        raise ValueError(
            f"layer={layer!r} ({found['path']!r}) is called {found['calls']} times in one "
            "forward pass; split_encoder needs a layer called exactly once (a reused submodule "
            "has no single feature map, and replacing it would replace every call). Split at "
            "a submodule that is called once, e.g. wrap the first use in its own module"
        )
    features = found["features"]
    if not isinstance(features, jax.Array) or features.ndim != 4:
        raise ValueError(
            f"layer {found['path']!r} returned {type(features).__name__} "
            f"with shape {getattr(features, 'shape', None)}; expected a (B, h, w, c) feature map"
        )

    def replacing(a: jax.Array, delta: jax.Array | None, applied: list[str]):
        is_dense = _matcher(dense_after) if dense_after is not None else None

        def interceptor(next_fun, args, kwargs, context):
            if context.method_name != "__call__":
                return next_fun(*args, **kwargs)
            if is_layer(context.module):
                return a
            out = next_fun(*args, **kwargs)
            if delta is not None and is_dense(context.module):
                kernel = context.module.variables["params"]["kernel"]
                _, h, w, c = a.shape
                if kernel.shape[0] != h * w * c:
                    raise ValueError(
                        f"dense_after={dense_after!r} has input size {kernel.shape[0]}, but "
                        f"the feature map flattens to {h}*{w}*{c}={h * w * c}"
                    )
                kbar = jnp.sum(kernel.reshape(h, w, c, -1), axis=(0, 1))  # (c, F)
                out = out + delta.astype(kbar.dtype) @ kbar
                applied.append("/".join(context.module.path))
            return out

        return interceptor

    def head_fn(a: jax.Array) -> tuple[jax.Array, jax.Array]:
        return outputs(run(replacing(a, None, [])))

    shift_head_fn = None
    if dense_after is not None:

        def shift_head_fn(delta: jax.Array) -> tuple[jax.Array, jax.Array]:
            applied: list[str] = []
            out = outputs(run(replacing(features, delta, applied)))
            if len(applied) != 1:
                raise ValueError(
                    f"dense_after={dense_after!r} was called {len(applied)} times in the head "
                    "(expected exactly once after the feature layer)"
                )
            return out

    return EncoderSplit(
        features=features, head_fn=head_fn, shift_head_fn=shift_head_fn, outputs=full_out
    )
