"""Model-level helpers: train a :class:`~vae_xai.models.ConvVAE` on an image array, and compute
every map the paper shows for a batch (reconstruction error, per-latent and overall attention,
anomaly attention) in one jitted call.

The MNIST and quickstart experiments call these, and so can a notebook.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_xai import attention as att
from vae_xai import train
from vae_xai.encoder_split import split_encoder
from vae_xai.localization import encoder_statistics
from vae_xai.models import ConvVAE

__all__ = ["encode_statistics", "explain_batch", "train_conv_vae"]


def train_conv_vae(
    model: ConvVAE,
    batch_fn: Callable[[int], dict[str, Any]],
    *,
    workdir: str | pathlib.Path,
    num_steps: int,
    learning_rate: float = 1e-3,
    beta: float = 1.0,
    seed: int = 0,
    checkpoint_every: int = 500,
    log_every: int = 50,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume training) ``model`` with the Bernoulli ELBO and return its variables.

    A notebook's one call: Adam, :func:`vae_xai.train.init_state` (with the threefry key
    ``jax.random.key(seed)``), :func:`vae_xai.train.vae_update_fn` and
    :func:`vae_xai.train.train` (which also returns a :class:`~vae_xai.train.TrainInfo`;
    call it directly for that).

    Args:
      model: the VAE.
      batch_fn: ``step -> {"image": (B, H, W, C)}`` in [0, 1], deterministic in ``step``.
      workdir: the run folder (checkpoints, metrics); an existing run resumes.
      num_steps: total number of steps of the run.
      learning_rate: Adam learning rate.
      beta: KL weight.
      seed: seeds the initialization and the per-step keys.
      checkpoint_every: save period in steps.
      log_every: metrics period in steps.
      progress: show a progress bar.

    Returns:
      ``{"params": ...}``, the trained variables.
    """
    optimizer = optax.adam(learning_rate)
    shape = np.shape(batch_fn(0)["image"])[1:]
    state = train.init_state(model, optimizer, shape, key=jax.random.key(seed))
    state, _ = train.train(
        state,
        train.vae_update_fn(model, optimizer, beta=beta),
        batch_fn,
        workdir=workdir,
        num_steps=num_steps,
        seed=seed,
        checkpoint_every=checkpoint_every,
        log_every=log_every,
        progress=progress,
    )
    return {"params": state.params}


def encode_statistics(
    model: ConvVAE, variables: Any, images: np.ndarray, *, batch_size: int = 512
) -> tuple[jax.Array, jax.Array]:
    """Empirical reference statistics ``(mu_x, sigma_x^2)`` of ``images`` (normal data).

    See :func:`vae_xai.attention.reference_statistics`.

    Args:
      model: the VAE.
      variables: its variables.
      images: normal images ``(N, H, W, C)``.
      batch_size: images per encoder call.

    Returns:
      ``(mu_x, sigma_x^2)``, each ``(D,)``.
    """
    mu, logvar = encoder_statistics(model, variables, images, batch_size=batch_size)
    return att.reference_statistics(mu, logvar)


def explain_batch(
    model: ConvVAE,
    variables: Any,
    images: jax.Array,
    key: jax.Array,
    *,
    layer: str,
    ref_mu: jax.Array | float = 0.0,
    ref_var: jax.Array | float = 1.0,
) -> dict[str, jax.Array]:
    """Compute all maps for a batch of images, each upsampled to the image size.

    Jit it with ``layer`` static.

    Args:
      model: the VAE.
      variables: its variables.
      images: ``(B, H, W, C)`` in [0, 1].
      key: PRNG key for the sampled attention scores.
      layer: the encoder layer the attention is computed at (e.g. ``"conv2"``); at the last
        conv layer the fast ``dense_after="fc1"`` path is used.
      ref_mu: reference means of the normal data (see :func:`encode_statistics`).
      ref_var: reference variances of the normal data.

    Returns:
      A dict: ``recon`` ``(B, H, W, C)`` (Bernoulli mean at ``z = mu``), ``recon_error``
      ``(B, H, W)`` (squared error summed over channels), ``latent_maps`` ``(B, D, H, W)``
      (per-latent attention of the sampled ``z``, paper Sec. 3.2), ``attention`` ``(B, H, W)``
      (their mean, Eq. 4), ``anomaly_latent_maps`` and ``anomaly_attention`` (normal difference
      sampling against ``(ref_mu, ref_var)``, Eq. 5), and ``mu`` ``(B, D)``.
    """
    size = images.shape[1:3]
    out = model.apply(variables, images)
    recon = jax.nn.sigmoid(out["logits"])
    dense_after = "fc1" if layer == f"conv{len(model.channels)}" else None
    split = split_encoder(
        model, variables, images, layer=layer, method="encode", dense_after=dense_after
    )
    k_att, k_anom = jax.random.split(key)
    maps = att.latent_attention(**split.attention_kwargs(), score="sample", key=k_att)
    anomaly = att.anomaly_attention(
        **split.attention_kwargs(), key=k_anom, ref_mu=ref_mu, ref_var=ref_var
    )
    maps = att.upsample(maps, size)
    anomaly = att.upsample(anomaly, size)
    return {
        "recon": recon,
        "recon_error": jnp.sum(jnp.square(images - recon), axis=-1),
        "latent_maps": maps,
        "attention": att.aggregate_attention(maps),
        "anomaly_latent_maps": anomaly,
        "anomaly_attention": att.aggregate_attention(anomaly),
        "mu": out["mu"],
    }
