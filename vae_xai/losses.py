"""VAE objectives as pure functions: ELBO terms, FactorVAE's total correlation, and L_AD.

Shapes: images ``(B, H, W, C)``, latents ``(B, D)``, attention maps ``(B, h, w)``. Functions
return per-example values ``(B,)`` unless they say otherwise, so callers choose the reduction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

__all__ = [
    "attention_disentanglement_loss",
    "bernoulli_nll",
    "discriminator_loss",
    "gaussian_kl",
    "gaussian_nll",
    "kl_per_latent",
    "permute_dims",
    "reconstruction_nll",
    "reparameterize",
    "total_correlation",
]


def reparameterize(mu: ArrayLike, logvar: ArrayLike, key: jax.Array) -> jax.Array:
    """Draw ``z = mu + eps * exp(logvar / 2)`` with ``eps = normal(key, mu.shape)``.

    The one place ``eps`` is drawn, so that the models, the sampled attention score and the
    FactorVAE step give the same ``z`` for the same key.

    Args:
      mu: posterior means, ``(B, D)``.
      logvar: posterior log-variances, ``(B, D)``.
      key: PRNG key for ``eps``.

    Returns:
      ``z``, ``(B, D)``, in ``mu``'s dtype.
    """
    mu = jnp.asarray(mu)
    return mu + jax.random.normal(key, mu.shape, mu.dtype) * jnp.exp(0.5 * jnp.asarray(logvar))


def bernoulli_nll(logits: ArrayLike, x: ArrayLike) -> jax.Array:
    """Bernoulli negative log-likelihood ``-log p(x | logits)`` summed over pixels.

    Args:
      logits: decoder logits, ``(B, H, W, C)``.
      x: targets in [0, 1] (continuous values allowed), same shape.

    Returns:
      ``(B,)``.
    """
    logits = jnp.asarray(logits)
    x = jnp.asarray(x, logits.dtype)
    per_pixel = optax.sigmoid_binary_cross_entropy(logits, x)
    return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1)


def gaussian_nll(mean: ArrayLike, x: ArrayLike, *, variance: float = 1.0) -> jax.Array:
    """Gaussian negative log-likelihood ``-log p(x | mean, variance)`` up to a constant.

    The scaled sum of squared errors ``0.5 * sum((x - mean)^2) / variance``.

    Args:
      mean: predicted means, ``(B, ...)``.
      x: targets, same shape.
      variance: the fixed per-pixel variance.

    Returns:
      ``(B,)``.
    """
    diff = jnp.asarray(x) - jnp.asarray(mean)
    return 0.5 * jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=-1) / variance


def reconstruction_nll(
    logits: ArrayLike, x: ArrayLike, *, likelihood: str = "bernoulli", variance: float = 0.5
) -> jax.Array:
    """Reconstruction term ``-log p(x | z)`` per example, from decoder logits.

    Args:
      logits: decoder logits, ``(B, H, W, C)``.
      x: targets in [0, 1], same shape.
      likelihood: ``"bernoulli"``: cross-entropy on the logits (:func:`bernoulli_nll`);
        ``"gaussian"``: mean ``sigmoid(logits)`` with fixed ``variance`` (:func:`gaussian_nll`).
      variance: the Gaussian variance; 0.5 makes it the plain sum of squared errors, the common
        "MSE(sum) + KL" VAE.

    Returns:
      ``(B,)``.

    Raises:
      ValueError: unknown ``likelihood``.
    """
    if likelihood == "bernoulli":
        return bernoulli_nll(logits, x)
    if likelihood == "gaussian":
        return gaussian_nll(jax.nn.sigmoid(jnp.asarray(logits)), x, variance=variance)
    raise ValueError(f'likelihood must be "bernoulli" or "gaussian"; got {likelihood!r}')


def kl_per_latent(mu: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """``KL(N(mu_i, exp(logvar_i)) || N(0, 1))`` of each latent dim.

    ``0.5 * (exp(logvar) + mu^2 - 1 - logvar)``: the one per-latent KL to the prior that the
    ELBO (:func:`gaussian_kl`), FactorVAE's pair choice and the launchers' per-latent reports
    all use. (The KL to an arbitrary reference is :func:`vae_xai.attention.latent_kl_score`.)

    Args:
      mu: posterior means, ``(B, D)``.
      logvar: posterior log-variances, ``(B, D)``.

    Returns:
      ``(B, D)``.
    """
    mu = jnp.asarray(mu)
    logvar = jnp.asarray(logvar)
    return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)


def gaussian_kl(mu: ArrayLike, logvar: ArrayLike) -> jax.Array:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over latent dims.

    The sum of :func:`kl_per_latent` (the factor 0.5 is a power of two, so summing before or
    after scaling gives the same floats).

    Args:
      mu: posterior means, ``(B, D)``.
      logvar: posterior log-variances, ``(B, D)``.

    Returns:
      ``(B,)``.
    """
    return jnp.sum(kl_per_latent(mu, logvar), axis=-1)


def permute_dims(z: ArrayLike, key: jax.Array) -> jax.Array:
    """Shuffle each latent dim independently across the batch (FactorVAE, Kim & Mnih 2018).

    The result samples the product of marginals ``prod_j q(z_j)``.

    Args:
      z: latent samples, ``(B, D)``.
      key: PRNG key for the ``D`` permutations.

    Returns:
      ``(B, D)``.
    """
    z = jnp.asarray(z)
    keys = jax.random.split(key, z.shape[1])
    perms = jax.vmap(lambda k: jax.random.permutation(k, z.shape[0]))(keys)  # (D, B)
    return jnp.take_along_axis(z, perms.T, axis=0)


def total_correlation(logits: ArrayLike) -> jax.Array:
    """Density-ratio estimate of the total correlation from discriminator logits on ``q(z)``.

    With a 2-way discriminator (class 0 = ``q(z)``, class 1 = product of marginals),
    ``TC ~ log D(z) - log(1 - D(z)) = logit_0 - logit_1`` (Kim & Mnih 2018, Eq. 3).

    Args:
      logits: discriminator logits, ``(B, 2)``.

    Returns:
      Per-example TC estimates, ``(B,)``.
    """
    logits = jnp.asarray(logits)
    return logits[:, 0] - logits[:, 1]


def discriminator_loss(logits_q: ArrayLike, logits_perm: ArrayLike) -> jax.Array:
    """FactorVAE discriminator cross-entropy: ``q(z)`` is class 0, permuted samples class 1.

    Args:
      logits_q: discriminator logits on samples of ``q(z)``, ``(B, 2)``.
      logits_perm: logits on :func:`permute_dims` samples, ``(B', 2)``.

    Returns:
      The mean of the two classes' mean cross-entropies (scalar).
    """
    logits_q = jnp.asarray(logits_q)
    logits_perm = jnp.asarray(logits_perm)
    zeros = jnp.zeros(logits_q.shape[0], jnp.int32)
    ones = jnp.ones(logits_perm.shape[0], jnp.int32)
    ce_q = optax.softmax_cross_entropy_with_integer_labels(logits_q, zeros)
    ce_p = optax.softmax_cross_entropy_with_integer_labels(logits_perm, ones)
    return 0.5 * (jnp.mean(ce_q) + jnp.mean(ce_p))


def attention_disentanglement_loss(a1: ArrayLike, a2: ArrayLike, *, eps: float = 1e-8) -> jax.Array:
    """Attention disentanglement loss ``L_AD`` (paper Eq. 6), per example.

    ``L_AD(A1, A2) = 2 * sum_ij min(A1_ij, A2_ij) / sum_ij (A1_ij + A2_ij)``: the overlap of two
    non-negative maps, 0 when disjoint and 1 when identical.

    Args:
      a1: first attention maps, ``(B, h, w)``, non-negative.
      a2: second attention maps, same shape.
      eps: added to the denominator so that all-zero maps give 0 with a finite gradient.

    Returns:
      ``(B,)``.

    Raises:
      ValueError: ``a1`` and ``a2`` differ in shape.
    """
    a1 = jnp.asarray(a1)
    a2 = jnp.asarray(a2)
    if a1.shape != a2.shape:
        raise ValueError(f"attention maps must have equal shapes; got {a1.shape} and {a2.shape}")
    axes = tuple(range(1, a1.ndim))
    inter = jnp.sum(jnp.minimum(a1, a2), axis=axes)
    total = jnp.sum(a1 + a2, axis=axes)
    return 2.0 * inter / (total + eps)
