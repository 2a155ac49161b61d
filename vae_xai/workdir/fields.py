"""A run's config as its record sees it: plain JSON (:func:`config_dict`), flattened to dotted
keys (:func:`flatten`), with finite values and a valid seed (:func:`check_values`), and which
of its fields may differ between the starts of one workdir (:class:`Fields`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vae_xai.validation import ConfigError

__all__ = ["SEED_LIMIT", "Fields", "check_values", "config_dict", "flatten", "select"]

# What jax.random.key holds of a seed: 32 bits (key(2**32) is key(0)).
SEED_LIMIT = 2**32


@dataclasses.dataclass(frozen=True)
class Fields:
    """Which config fields may differ between the starts of one workdir.

    Attributes:
      num_steps: dotted path of the total step count; it may grow, never fall below the step
        already trained.
      eval: dotted paths (a subtree or a leaf) that only change evaluation; each evaluation
        is recorded with their values.
      schedule: dotted paths that change neither the trained model nor the evaluation (how
        often to checkpoint and log, where to cache decoded data); recorded when they change.
      labels: dotted paths that only name a set of other fields' values (the config
        ``variant``); recorded when they change, never compared: the fields they stand for
        are. So ``:smoke`` -> ``:cpu`` on one workdir is refused by the fields that differ
        (batch size, ...), not by the name.
    """

    num_steps: str = "num_steps"
    eval: tuple[str, ...] = ("eval",)
    schedule: tuple[str, ...] = ("checkpoint_every", "log_every")
    labels: tuple[str, ...] = ("variant",)

    def kind(self, key: str) -> str:
        """What a dotted config key is to the record.

        Args:
          key: a dotted key of the flattened config.

        Returns:
          ``"num_steps"``, ``"eval"``, ``"schedule"``, ``"label"`` or ``"train"`` (compared).
        """
        if key == self.num_steps:
            return "num_steps"
        for name, prefixes in (
            ("eval", self.eval),
            ("schedule", self.schedule),
            ("label", self.labels),
        ):
            if any(key == p or key.startswith(p + ".") for p in prefixes):
                return name
        return "train"


def config_dict(config: Any) -> dict[str, Any]:
    """A ConfigDict (or mapping) as plain JSON values (tuples become lists).

    Args:
      config: a ConfigDict or mapping.

    Returns:
      A plain dict.
    """
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(raw, default=str))


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and empty mappings are leaves).

    Args:
      tree: nested mappings.
      prefix: prepended to every key.

    Returns:
      The flat dict.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def diff_flat(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    *,
    missing: Any,
    keep: Callable[[str], bool] | None = None,
) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for each key of two flat configs whose values differ.

    Args:
      old: a flattened config (:func:`flatten`).
      new: another.
      missing: the value reported for a key that one side lacks.
      keep: only keys for which this is true (default: all).

    Returns:
      The differences, by key.
    """
    return [
        (k, old.get(k, missing), new.get(k, missing))
        for k in sorted(set(old) | set(new))
        if (keep is None or keep(k)) and old.get(k, missing) != new.get(k, missing)
    ]


def select(tree: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """The flattened entries of ``tree`` at or under the dotted ``paths``.

    Args:
      tree: nested mappings.
      paths: dotted paths (a subtree or a leaf).

    Returns:
      ``{dotted key: value}``.
    """
    flat = flatten(tree)
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in paths)}


def check_values(config: Any) -> None:
    """Check that every float of the config is finite and ``seed`` fits the random key.

    ``seed`` must be an integer in [0, 2**32): seeds equal modulo 2**32 would train the same
    run twice.

    Args:
      config: a ConfigDict or mapping.

    Raises:
      ConfigError: names the first offending field.
    """
    for key, value in flatten(config_dict(config)).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(key, f"must be finite; got {value!r}")
    flat = flatten(config_dict(config))
    if "seed" in flat and flat["seed"] is not None:
        seed = flat["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
            raise ConfigError("seed", f"must be an integer in [0, 2**32); got {seed!r}")
