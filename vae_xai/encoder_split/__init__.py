"""Split a Flax encoder at a named submodule, without editing it: ``features = f(x)`` at that
layer and ``(mu, logvar) = head_fn(features)``, what :mod:`vae_xai.attention` needs.

* :func:`split_encoder` (:mod:`.linen`) -- a Linen module, through
  :func:`flax.linen.intercept_methods`.
* :func:`split_nnx_encoder` (:mod:`.nnx`) -- an NNX module, through a private
  :func:`flax.nnx.merge` copy with the layer wrapped.
* Both return an :class:`EncoderSplit` (:mod:`.common`).
"""

from vae_xai.encoder_split.common import EncoderSplit, OutputsFn, default_outputs
from vae_xai.encoder_split.linen import split_encoder
from vae_xai.encoder_split.nnx import split_nnx_encoder

__all__ = ["EncoderSplit", "OutputsFn", "default_outputs", "split_encoder", "split_nnx_encoder"]
