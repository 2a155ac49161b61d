"""The ELBO update of the VAEs in :mod:`vae_xai.models`, as an ``update_fn`` for the steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from vae_xai import losses
from vae_xai.train.state import Batch, TrainState, UpdateFn


def vae_update_fn(
    model: Any,
    optimizer: optax.GradientTransformation,
    *,
    beta: float = 1.0,
    likelihood: str = "bernoulli",
    variance: float = 0.5,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    image_key: str = "image",
) -> UpdateFn:
    """ELBO update ``(state, batch, key) -> (state, metrics)`` for our VAEs.

    The model is called as ``model.apply(variables, x, key, train=True)`` and returns
    ``{"mu", "logvar", "logits", ...}``. Loss per example:
    :func:`vae_xai.losses.reconstruction_nll` ``+ beta * KL(q(z|x) || N(0, I))``; the batch
    mean is minimized with ``optimizer``. If ``state.model_state`` has ``batch_stats``, the
    model runs with ``mutable=["batch_stats"]``: normalization uses the batch statistics (over
    the global batch under the sharded :func:`~vae_xai.train.jit_step`) and the running
    averages are stored back in ``state.model_state``.

    Args:
      model: a VAE of :mod:`vae_xai.models` (or one with the same call convention).
      optimizer: the optimizer of ``state.params``.
      beta: KL weight (1 is the plain ELBO).
      likelihood: ``"bernoulli"`` or ``"gaussian"``
        (see :func:`~vae_xai.losses.reconstruction_nll`).
      variance: the Gaussian likelihood's fixed variance.
      augment: optional ``augment(key, images) -> images`` (e.g. random mirror + rotation),
        run on device on the batch before the model; the step key is then split into an
        augmentation and a sampling key (without it the step key samples ``z`` directly).
      image_key: batch key of the ``(B, H, W, C)`` images.

    Returns:
      The update function; metrics ``loss``, ``recon``, ``kl`` (batch means).

    Raises:
      ValueError: unknown ``likelihood``.
    """
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(f'likelihood must be "bernoulli" or "gaussian"; got {likelihood!r}')

    def update(state: TrainState, batch: Batch, key: jax.Array):
        x = jnp.asarray(batch[image_key])
        k_z = key
        if augment is not None:
            k_aug, k_z = jax.random.split(key)
            x = augment(k_aug, x)
        has_bn = "batch_stats" in state.model_state

        def loss_fn(params):
            if has_bn:
                variables = {"params": params, "batch_stats": state.model_state["batch_stats"]}
                out, updates = model.apply(variables, x, k_z, train=True, mutable=["batch_stats"])
            else:
                out, updates = model.apply({"params": params}, x, k_z, train=True), {}
            rec = losses.reconstruction_nll(
                out["logits"], x, likelihood=likelihood, variance=variance
            )
            kl = losses.gaussian_kl(out["mu"], out["logvar"])
            loss = jnp.mean(rec + beta * kl)
            aux = {"loss": loss, "recon": jnp.mean(rec), "kl": jnp.mean(kl)}
            return loss, (aux, updates)

        grads, (aux, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
        upd, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, upd)
        model_state = {**state.model_state, **updates}
        return state.replace(params=params, opt_state=opt_state, model_state=model_state), aux

    return update
