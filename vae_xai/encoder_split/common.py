"""What both splitters return: :class:`EncoderSplit`, and how ``(mu, logvar)`` is read from an
encoder's output (:func:`default_outputs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from vae_xai.attention import HeadFn, ShiftHeadFn

__all__ = ["EncoderSplit", "OutputsFn", "default_outputs"]

OutputsFn = Callable[[Any], tuple[jax.Array, jax.Array]]


def default_outputs(out: Any) -> tuple[jax.Array, jax.Array]:
    """Read ``(mu, logvar)`` from an encoder's output.

    Args:
      out: a mapping with keys ``"mu"`` and ``"logvar"``, or a tuple/list ``(mu, logvar, ...)``.

    Returns:
      ``(mu, logvar)``.

    Raises:
      KeyError: a mapping without ``"mu"`` or ``"logvar"``.
      TypeError: any other output type.
    """
    if isinstance(out, Mapping):
        missing = [k for k in ("mu", "logvar") if k not in out]
        if missing:
            raise KeyError(
                f"encoder output dict has no {missing}; keys are {sorted(out)}. "
                "Pass outputs=lambda out: (mu, logvar) to split_encoder."
            )
        return out["mu"], out["logvar"]
    if isinstance(out, tuple | list) and len(out) >= 2:
        return out[0], out[1]
    raise TypeError(
        f"cannot find (mu, logvar) in encoder output of type {type(out).__name__}; "
        "pass outputs=lambda out: (mu, logvar) to split_encoder"
    )


@dataclasses.dataclass(frozen=True)
class EncoderSplit:
    """An encoder split at a feature layer, ready for :mod:`vae_xai.attention`.

    Attributes:
      features: the feature map ``A`` at the layer, ``(B, h, w, c)``.
      head_fn: ``A -> (mu, logvar)``, each ``(B, D)``.
      shift_head_fn: exact fast form of ``delta -> head_fn(A + delta[:, None, None, :])``
        when the layer after ``A`` is a Dense on ``flatten(A)`` (``dense_after=``), else None.
      outputs: the encoder's full output at ``x`` (e.g. for ``mu``, ``logvar``).
    """

    features: jax.Array
    head_fn: HeadFn
    shift_head_fn: ShiftHeadFn | None
    outputs: Any

    def attention_kwargs(self) -> dict[str, Any]:
        """``head_fn``/``features``/``shift_head_fn`` as keyword arguments."""
        return {
            "head_fn": self.head_fn,
            "features": self.features,
            "shift_head_fn": self.shift_head_fn,
        }
