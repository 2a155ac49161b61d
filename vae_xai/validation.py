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
    """``config.a.b`` for ``field="a.b"`` (ConfigDict or nested mappings)."""
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
    """Each field is a number > 0 (periods, sizes, learning rates)."""
    for field in fields:
        value = get(config, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(field, f"must be > 0; got {value!r}")


def at_least(config: Any, field: str, minimum: int) -> None:
    """An integer field is ``>= minimum``."""
    value = _int(config, field)
    if value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}; got {value}")


def non_empty(config: Any, *fields: str) -> None:
    """Each field is a non-empty sequence (or string)."""
    for field in fields:
        value = get(config, field)
        if value is None or len(value) == 0:
            raise ConfigError(field, f"must not be empty; got {value!r}")


def one_of(config: Any, field: str, choices: Collection[Any]) -> None:
    """The field's value is one of ``choices``."""
    value = get(config, field)
    if value not in choices:
        raise ConfigError(field, f"must be one of {sorted(choices)}; got {value!r}")


def subset(config: Any, field: str, choices: Collection[Any], *, allow_empty: bool = False) -> None:
    """Every entry of a sequence field is one of ``choices`` (and, unless ``allow_empty``,
    there is at least one)."""
    value = get(config, field)
    if isinstance(value, str):
        raise ConfigError(field, f"must be a sequence of names, not the string {value!r}")
    if not allow_empty and not value:
        raise ConfigError(field, "must not be empty")
    unknown = [v for v in value if v not in choices]
    if unknown:
        raise ConfigError(field, f"unknown entries {unknown}; choose from {sorted(choices)}")


def digits(config: Any, field: str) -> None:
    """A digit or a non-empty sequence of digits, each an integer in 0..9."""
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
    """``path`` exists (``kind`` ``"dir"``, ``"file"`` or ``"any"``); returns it.

    A missing path is a ``FileNotFoundError`` whose message starts with ``field``; no path at
    all is a :class:`ConfigError`.
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
    """Every name in ``layers`` is a submodule of ``model.<method>`` (its name or full
    ``/``-path, as :func:`vae_xai.encoder_split.split_encoder` matches them) whose output is a
    ``(B, h, w, c)`` feature map when ``feature_map``."""
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
