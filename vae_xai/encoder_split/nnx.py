"""Split any Flax NNX encoder at a named submodule, without editing it.

The NNX counterpart of :func:`vae_xai.encoder_split.split_encoder` (:mod:`.linen`). NNX has no
``intercept_methods``; its intermediates API (``Module.sow`` / ``Module.perturb`` with
``nnx.capture``) needs calls written into the model, and ``nnx.capture(method_outputs=...)``
only records method outputs (by patching the classes, which would also affect the user's other
instances). What NNX does offer is the functional API: :func:`flax.nnx.split` gives a
``(graphdef, state)`` snapshot and :func:`flax.nnx.merge` with ``copy=True`` builds a fresh,
independent module from it (new ``Variable`` objects, shared array buffers; this is what
:func:`flax.nnx.clone` does). Each evaluation here merges such a private copy and, on that copy
only, replaces the attribute holding the named submodule by a small wrapper: one run records its
output (the feature map ``A``), the others return a given ``A`` instead, so everything downstream
is a function of it. The user's module, its classes and its ``Variable`` objects are never
touched, state updates made while running (BatchNorm statistics, RNG counters) stay in the
discarded copy, and the whole thing is a pure function of the snapshot, so it composes with
``jax.jit``, ``jax.grad``, ``jax.vmap`` and the ``nnx`` transforms. Under ``jit`` the upstream
computation made unused by the replacement is removed by XLA.

``layer`` names the submodule attribute whose ``__call__`` output is the feature map: a name
(e.g. ``"conv2"``; must be unique in the module tree) or a ``/``-joined attribute path
(e.g. ``"encoder/conv2"``; integer parts index ``nnx.List`` / ``list`` containers, e.g.
``"blocks/1"``). Pick a submodule whose output is the activation you want (for Grad-CAM
usually post-ReLU; wrap conv + activation in a small ``nnx.Module`` if your model applies the
activation as a function). Put the model in inference mode (``model.eval()``) first so the head
acts per sample.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from vae_xai.encoder_split.common import EncoderSplit, OutputsFn, default_outputs

__all__ = ["split_nnx_encoder"]

PathParts = tuple[str | int, ...]


def _path_str(path: PathParts) -> str:
    return "/".join(str(p) for p in path)


def _child(node: Any, key: str | int) -> Any:
    """``node.key`` for attributes, ``node[key]`` for list/dict containers."""
    if isinstance(node, nnx.Module) and isinstance(key, str) and hasattr(node, key):
        return getattr(node, key)
    try:
        return node[key]
    except (TypeError, KeyError, IndexError):
        pass
    if isinstance(key, str) and hasattr(node, key):
        return getattr(node, key)
    raise LookupError(key)


def _set_child(node: Any, key: str | int, value: Any) -> None:
    if isinstance(node, nnx.Module) and isinstance(key, str) and key in vars(node):
        # Bypasses NNX's attribute checks on purpose: the wrapper is not data, and this node
        # is a private copy that is thrown away after one call.
        object.__setattr__(node, key, value)
    else:
        node[key] = value


def _parse(path: str) -> PathParts:
    return tuple(int(p) if p.isdigit() else p for p in path.split("/") if p)


def _resolve(root: nnx.Module, spec: str, arg: str) -> PathParts:
    """Path parts of the submodule named by ``spec`` (``arg`` names the argument in errors)."""
    if not isinstance(spec, str):
        raise TypeError(f"{arg} must be a submodule name or '/'-joined path; got {spec!r}")
    parts = _parse(spec)
    if not parts:
        raise ValueError(f"{arg} must be a non-empty submodule name or path; got {spec!r}")
    modules = [(tuple(p), m) for p, m in nnx.iter_modules(root) if p]
    available = ", ".join(repr(_path_str(p)) for p, _ in modules) or "none"
    if len(parts) == 1:
        hits = [p for p, _ in modules if str(p[-1]) == str(parts[0])]
        if len(hits) > 1:
            raise ValueError(
                f"{arg}={spec!r} is ambiguous: it matches "
                f"{', '.join(repr(_path_str(p)) for p in hits)}; pass the full path"
            )
        if hits:
            return hits[0]
    node: Any = root
    for i, part in enumerate(parts):
        try:
            node = _child(node, part)
        except LookupError:
            raise ValueError(
                f"{arg}={spec!r}: {type(node).__name__} at "
                f"{_path_str(parts[:i]) or '<root>'!r} has no submodule {str(part)!r}; "
                f"submodules of {type(root).__name__} are: {available}"
            ) from None
    if not isinstance(node, nnx.Module):
        raise ValueError(f"{arg}={spec!r} is a {type(node).__name__}, not an nnx.Module")
    return parts


def _get(root: Any, parts: PathParts) -> Any:
    node = root
    for part in parts:
        node = _child(node, part)
    return node


class _Wrapped:
    """Stands in for a submodule on a private copy: calls ``hook(inner, args, kwargs)``."""

    def __init__(self, inner: nnx.Module, hook: Callable[..., Any]):
        self._inner = inner
        self._hook = hook

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._hook(self._inner, args, kwargs)

    def __getattr__(self, name: str) -> Any:  # other methods/attributes of the submodule
        if name in ("_inner", "_hook"):  # not set yet (e.g. while copying)
            raise AttributeError(name)
        return getattr(self._inner, name)


def _kernel(dense: Any, dense_after: str) -> jax.Array:
    kernel = getattr(dense, "kernel", None)
    if kernel is None:
        raise ValueError(
            f"dense_after={dense_after!r} is a {type(dense).__name__} without a 'kernel'; "
            "it must be an nnx.Linear (or a module with a (in, out) kernel) on flatten(A)"
        )
    kernel = jnp.asarray(kernel[...])
    if kernel.ndim != 2:
        raise ValueError(
            f"dense_after={dense_after!r} has a kernel of shape {kernel.shape}; expected (in, out)"
        )
    return kernel


def split_nnx_encoder(
    module: nnx.Module,
    x: jax.Array,
    *,
    layer: str,
    method: str | Callable[..., Any] | None = None,
    outputs: OutputsFn | None = None,
    dense_after: str | None = None,
    **call_kwargs: Any,
) -> EncoderSplit:
    """Split ``module.method(x)`` of a Flax NNX module at submodule ``layer``.

    Args:
      module: any ``flax.nnx.Module`` (not modified). Use inference mode (``module.eval()``)
        so the head acts per sample.
      x: the input batch.
      layer: name or ``/``-joined path of the submodule whose ``__call__`` output is the
        feature map ``A`` ``(B, h, w, c)``. It must be called exactly once by ``method``.
      method: the method to run: a name (e.g. ``"encode"``) or a callable
        ``f(module, x, **call_kwargs)``; default ``__call__``.
      outputs: maps the method's output to ``(mu, logvar)``; default: a dict with ``"mu"`` and
        ``"logvar"`` or a tuple ``(mu, logvar, ...)``.
      dense_after: name/path of an ``nnx.Linear`` that consumes ``flatten(A)`` (row-major over
        ``h, w, c``) directly. Enables the exact fast path for all-latent attention
        (``shift_head_fn``). Its input size is checked against ``h * w * c``; the flatten order
        is the caller's promise.
      **call_kwargs: extra keyword arguments for the method (e.g. ``deterministic=True``).

    Returns:
      An :class:`~vae_xai.encoder_split.EncoderSplit`: ``features`` ``A``, ``head_fn``
      ``A -> (mu, logvar)``, ``shift_head_fn`` (with ``dense_after``, else None) and
      ``outputs`` (the method's full output at ``x``).

    Raises:
      TypeError: ``module`` is not an NNX module, or ``method``/``layer`` has the wrong type.
      ValueError: ``layer``/``dense_after`` not found, ambiguous, not called exactly once, or
        of the wrong shape; ``method`` not a method of ``module``.

    Example::

        split = split_nnx_encoder(model, x, layer="encoder/block2", method="encode")
        maps = latent_attention(split.head_fn, split.features)  # (B, D, h, w)
    """
    if not isinstance(module, nnx.Module):
        hint = ""
        if type(module).__module__.startswith("flax.linen") or hasattr(module, "apply"):
            hint = " (for a Linen module use vae_xai.encoder_split.split_encoder)"
        raise TypeError(f"module must be a flax.nnx.Module; got {type(module).__name__}{hint}")
    if outputs is None:
        outputs = default_outputs
    if method is None:
        method = "__call__"
    if isinstance(method, str):
        if not callable(getattr(module, method, None)):
            raise ValueError(
                f"method={method!r}: {type(module).__name__} has no method named {method!r}"
            )
        method_name = method

        def call(m: nnx.Module) -> Any:
            return getattr(m, method_name)(x, **call_kwargs)

    elif callable(method):
        method_name = getattr(method, "__name__", repr(method))
        method_fn = method

        def call(m: nnx.Module) -> Any:
            return method_fn(m, x, **call_kwargs)

    else:
        raise TypeError(f"method must be a method name or a callable; got {method!r}")

    layer_path = _resolve(module, layer, "layer")
    dense_path = _resolve(module, dense_after, "dense_after") if dense_after is not None else None
    if dense_path is not None and dense_path == layer_path:
        raise ValueError(f"dense_after={dense_after!r} names the feature layer itself")

    graphdef, state = nnx.split(module)
    # A snapshot with its own Variable objects: later in-place updates of the user's module
    # (e.g. an optimizer step) do not change this split.
    state = jax.tree.map(lambda v: v, state)

    def run(hooks: Mapping[PathParts, Callable[..., Any]]) -> Any:
        copy = nnx.merge(graphdef, state, copy=True)
        for path, hook in hooks.items():
            parent = _get(copy, path[:-1])
            _set_child(parent, path[-1], _Wrapped(_child(parent, path[-1]), hook))
        return call(copy)

    def check_calls(calls: list[Any], arg: str, spec: str) -> None:
        if len(calls) != 1:
            what = "was not called" if not calls else f"was called {len(calls)} times"
            raise ValueError(
                f"{arg}={spec!r} {what} while running {type(module).__name__}.{method_name}; "
                "it must be called exactly once (after the feature layer for dense_after)"
            )

    recorded: list[Any] = []

    def record(inner, args, kwargs):
        out = inner(*args, **kwargs)
        recorded.append(out)
        return out

    full_out = run({layer_path: record})
    check_calls(recorded, "layer", layer)
    features = recorded[0]
    if not isinstance(features, jax.Array) or features.ndim != 4:
        raise ValueError(
            f"layer={layer!r} returned {type(features).__name__} with shape "
            f"{getattr(features, 'shape', None)}; expected a (B, h, w, c) feature map"
        )

    def replace_with(a: jax.Array, calls: list[Any]):
        def hook(inner, args, kwargs):
            calls.append(None)
            return a

        return hook

    def head_fn(a: jax.Array) -> tuple[jax.Array, jax.Array]:
        calls: list[Any] = []
        out = outputs(run({layer_path: replace_with(a, calls)}))
        check_calls(calls, "layer", layer)
        return out

    shift_head_fn = None
    if dense_path is not None:
        _, h, w, c = features.shape
        fan_in = _kernel(_get(module, dense_path), dense_after).shape[0]
        if fan_in != h * w * c:
            raise ValueError(
                f"dense_after={dense_after!r} has input size {fan_in}, but the feature map "
                f"flattens to {h}*{w}*{c}={h * w * c}"
            )

        def shift_head_fn(delta: jax.Array) -> tuple[jax.Array, jax.Array]:
            layer_calls: list[Any] = []
            dense_calls: list[Any] = []

            def shifted(inner, args, kwargs):
                out = inner(*args, **kwargs)
                kbar = jnp.sum(_kernel(inner, dense_after).reshape(h, w, c, -1), axis=(0, 1))
                dense_calls.append(None)
                return out + delta.astype(kbar.dtype) @ kbar

            out = outputs(
                run({layer_path: replace_with(features, layer_calls), dense_path: shifted})
            )
            check_calls(layer_calls, "layer", layer)
            check_calls(dense_calls, "dense_after", dense_after)
            return out

    return EncoderSplit(
        features=features, head_fn=head_fn, shift_head_fn=shift_head_fn, outputs=full_out
    )
