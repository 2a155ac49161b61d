"""Config validation before any work: every failure is a :class:`ConfigError` naming the field.

Launchers call these checks (through their experiment's ``validate``, in
:mod:`vae_xai.experiments`) before :func:`vae_xai.workdir.start`, data loading, model init or
compilation, so a typo costs seconds, not a training run. Model layers are checked by a
shape-only trace (:func:`jax.eval_shape`): no parameters are allocated and nothing is compiled.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "at_least",
    "digits",
    "existing_path",
    "get",
    "layers_of",
    "model_layers",
    "non_empty",
    "one_of",
    "positive",
    "subset",
]


class ConfigError(ValueError):
    """An invalid config value; the message starts with the field's dotted name."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def get(config: Any, field: str) -> Any:
    """Read a dotted field: ``config.a.b`` for ``field="a.b"`` (ConfigDict or nested mappings).

    Args:
      config: the config.
      field: the dotted field name.

    Returns:
      The value.

    Raises:
      ConfigError: the field is missing.
    """
    value = config
    for part in field.split("."):
        try:
            value = value[part]
        except (KeyError, TypeError) as err:
            raise ConfigError(field, "missing from the config") from err
    return value


def _int(config: Any, field: str) -> int:
    value = get(config, field)
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ConfigError(field, f"must be an integer; got {value!r}")
    return int(value)


def positive(config: Any, *fields: str) -> None:
    """Check that each field is a number > 0 (periods, sizes, learning rates).

    Args:
      config: the config.
      *fields: dotted field names.

    Raises:
      ConfigError: a field is missing, not a number, or not > 0.
    """
    for field in fields:
        value = get(config, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(field, f"must be > 0; got {value!r}")


def at_least(config: Any, field: str, minimum: int) -> None:
    """Check that an integer field is ``>= minimum``.

    Args:
      config: the config.
      field: the dotted field name.
      minimum: the smallest allowed value.

    Raises:
      ConfigError: the field is missing, not an integer, or too small.
    """
    value = _int(config, field)
    if value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}; got {value}")


def non_empty(config: Any, *fields: str) -> None:
    """Check that each field is a non-empty sequence (or string).

    Args:
      config: the config.
      *fields: dotted field names.

    Raises:
      ConfigError: a field is missing, ``None`` or empty.
    """
    for field in fields:
        value = get(config, field)
        if value is None or len(value) == 0:
            raise ConfigError(field, f"must not be empty; got {value!r}")


def one_of(config: Any, field: str, choices: Collection[Any]) -> None:
    """Check that the field's value is one of ``choices``.

    Args:
      config: the config.
      field: the dotted field name.
      choices: the allowed values.

    Raises:
      ConfigError: the field is missing or not one of ``choices``.
    """
    value = get(config, field)
    if value not in choices:
        raise ConfigError(field, f"must be one of {sorted(choices)}; got {value!r}")


def subset(config: Any, field: str, choices: Collection[Any], *, allow_empty: bool = False) -> None:
    """Check that every entry of a sequence field is one of ``choices``.

    Args:
      config: the config.
      field: the dotted field name.
      choices: the allowed entries.
      allow_empty: accept an empty sequence (else at least one entry is required).

    Raises:
      ConfigError: the field is missing, a string, empty (unless allowed), or has unknown
        entries.
    """
    value = get(config, field)
    if isinstance(value, str):
        raise ConfigError(field, f"must be a sequence of names, not the string {value!r}")
    if not allow_empty and not value:
        raise ConfigError(field, "must not be empty")
    unknown = [v for v in value if v not in choices]
    if unknown:
        raise ConfigError(field, f"unknown entries {unknown}; choose from {sorted(choices)}")


def digits(config: Any, field: str) -> None:
    """Check that a field is a digit or a non-empty sequence of digits, each an integer in 0..9.

    Args:
      config: the config.
      field: the dotted field name.

    Raises:
      ConfigError: the field is missing, empty, or holds something other than 0..9.
    """
    value = get(config, field)
    values = [value] if isinstance(value, int | str) else list(value)
    if not values:
        raise ConfigError(field, "must name at least one digit")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9]
    if bad:
        raise ConfigError(field, f"MNIST digits are integers 0..9; got {bad} in {value!r}")


def existing_path(
    path: str | os.PathLike[str] | None, field: str, *, kind: str = "dir"
) -> pathlib.Path:
    """Check that ``path`` exists and return it.

    Args:
      path: the path (``None`` or ``""``: not given).
      field: the field name the messages start with.
      kind: ``"dir"``, ``"file"`` or ``"any"``.

    Returns:
      ``path`` as a ``pathlib.Path``.

    Raises:
      ConfigError: no path given.
      FileNotFoundError: the path does not exist as ``kind`` (the message starts with ``field``).
    """
    if path is None or str(path) == "":
        raise ConfigError(field, "is required")
    p = pathlib.Path(path)
    ok = {"dir": p.is_dir, "file": p.is_file, "any": p.exists}[kind]()
    if not ok:
        what = {"dir": "folder", "file": "file", "any": "path"}[kind]
        raise FileNotFoundError(f"{field}: {what} {p} does not exist")
    return p


def layers_of(
    model: Any, input_shape: Sequence[int], *, method: str = "encode", **kwargs: Any
) -> dict[str, tuple[int, ...]]:
    """``{submodule path: output shape}`` of every submodule called by ``model.<method>``.

    A shape-only trace (:func:`jax.eval_shape` of ``model.init``): no parameters are
    materialized and nothing is compiled. Paths are ``/``-joined, as
    :func:`vae_xai.encoder_split.split_encoder` accepts them.

    Args:
      model: a Flax Linen module.
      input_shape: the shape of one input, without the batch axis.
      method: the method to trace.
      **kwargs: extra keyword arguments for ``model.init``.

    Returns:
      The output shape of each submodule's first ``__call__``, ``()`` for non-arrays.
    """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    found: dict[str, tuple[int, ...]] = {}

    def record(next_fun, args, kw, context):
        out = next_fun(*args, **kw)
        if context.method_name == "__call__" and context.module.path:
            shape = tuple(out.shape) if hasattr(out, "shape") else ()
            found.setdefault("/".join(context.module.path), shape)
        return out

    def init():
        x = jnp.zeros((1, *input_shape), jnp.float32)
        with nn.intercept_methods(record):
            return model.init(jax.random.key(0), x, method=method, **kwargs)

    jax.eval_shape(init)
    return found


def model_layers(
    model: Any,
    input_shape: Sequence[int],
    layers: Iterable[str],
    field: str,
    *,
    method: str = "encode",
    feature_map: bool = True,
    **kwargs: Any,
) -> None:
    """Check that every name in ``layers`` is a (feature-map) layer of ``model.<method>``.

    A name matches a submodule's name or its full ``/``-path, as
    :func:`vae_xai.encoder_split.split_encoder` matches them.

    Args:
      model: a Flax Linen module.
      input_shape: the shape of one input, without the batch axis.
      layers: one layer name or several.
      field: the config field the layers come from, named in errors.
      method: the method to trace.
      feature_map: also require a ``(B, h, w, c)`` output.
      **kwargs: extra keyword arguments for ``model.init``.

    Raises:
      ConfigError: a layer is unknown, ambiguous, or (with ``feature_map``) not 4-D.
    """
    available = layers_of(model, input_shape, method=method, **kwargs)
    by_name: Mapping[str, list[str]] = {}
    for path in available:
        by_name.setdefault(path.split("/")[-1], []).append(path)  # type: ignore[attr-defined]
    layers = [layers] if isinstance(layers, str) else list(layers)
    for layer in layers:
        paths = [layer] if layer in available else by_name.get(layer, [])
        if not paths:
            names = sorted({p.split("/")[-1] for p in available})
            raise ConfigError(
                field,
                f"{type(model).__name__}.{method} has no layer {layer!r}; its layers are {names}",
            )
        if len(paths) > 1:
            raise ConfigError(field, f"layer {layer!r} is ambiguous: {paths}; give the full path")
        if feature_map and len(available[paths[0]]) != 4:
            raise ConfigError(
                field,
                f"layer {layer!r} outputs shape {available[paths[0]]}, not a (B, h, w, c) "
                "feature map",
            )
