"""FactorVAE's total-correlation discriminator (Kim & Mnih, "Disentangling by Factorising", 2018).

The discriminator tells samples of the aggregate posterior ``q(z)`` (class 0) from samples of
the product of its marginals ``prod_j q(z_j)`` (class 1, made with
:func:`vae_xai.losses.permute_dims`). Its logit difference estimates the total correlation
(:func:`vae_xai.losses.total_correlation`). Kim & Mnih's architecture for dSprites is an MLP
of 6 hidden layers of 1000 units with leaky ReLU (slope 0.2) and 2 output logits; the VAE is
:func:`vae_xai.models.conv_vae.dsprites_vae`.

:func:`init_factor_vae` initialises both networks into the ``{"vae": ..., "disc": ...}``
parameter tree that :mod:`vae_xai.disentangle` trains in one jitted step.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["FactorDiscriminator", "init_factor_vae"]


class FactorDiscriminator(nn.Module):
    """MLP ``z (B, D) -> logits (B, 2)``; class 0 = ``q(z)``, class 1 = permuted marginals.

    Attributes:
      hidden: units per hidden layer (Kim & Mnih: 1000).
      num_layers: number of hidden Dense layers (Kim & Mnih: 6), named ``fc1``..``fcN``.
      negative_slope: leaky-ReLU slope (Kim & Mnih: 0.2).
    """

    hidden: int = 1000
    num_layers: int = 6
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        if z.ndim != 2:
            raise ValueError(f"discriminator input must be latents of shape (B, D); got {z.shape}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {self.num_layers}")
        h = z
        for i in range(self.num_layers):
            h = nn.Dense(self.hidden, name=f"fc{i + 1}")(h)
            h = nn.leaky_relu(h, negative_slope=self.negative_slope)
        return nn.Dense(2, name="logits")(h)


def init_factor_vae(
    key: jax.Array,
    vae: nn.Module,
    disc: nn.Module,
    *,
    input_shape: tuple[int, int, int],
    latent_dim: int,
) -> dict[str, Any]:
    """Initial parameters ``{"vae": ..., "disc": ...}`` for a VAE and its TC discriminator.

    Args:
      key: PRNG key.
      vae: a VAE whose ``__call__(x)`` accepts ``(B, *input_shape)`` images.
      disc: the discriminator (e.g. :class:`FactorDiscriminator`).
      input_shape: ``(H, W, C)`` of one image.
      latent_dim: ``D``, the VAE's latent size (the discriminator's input size).

    Returns:
      ``{"vae": vae params, "disc": discriminator params}``.
    """
    k_vae, k_disc = jax.random.split(key)
    x = jnp.zeros((1, *input_shape), jnp.float32)
    z = jnp.zeros((1, latent_dim), jnp.float32)
    return {
        "vae": vae.init(k_vae, x)["params"],
        "disc": disc.init(k_disc, z)["params"],
    }
