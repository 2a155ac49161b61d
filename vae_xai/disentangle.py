"""FactorVAE and AD-FactorVAE training steps (Kim & Mnih 2018; Liu et al. 2020, Eq. 6-7).

One jitted step updates both networks. The parameters are ``{"vae": ..., "disc": ...}``
(see :func:`vae_xai.models.factor_vae.init_factor_vae`) and :func:`factor_vae_optimizer` gives
each its own Adam through ``optax.multi_transform``. A single scalar is differentiated:

``vae_loss(vae; disc frozen) + disc_loss(disc; z frozen)``

with ``stop_gradient`` on the discriminator inside the VAE loss and on ``z`` inside the
discriminator loss, so one ``jax.grad`` yields exactly each network's own gradient from one
shared forward pass (both computed at the current parameters, as in Kim & Mnih's
Algorithm 1 up to the order of the two Adam steps).

* VAE loss (per example, batch-averaged): ``-log p(x|z) + KL(q(z|x) || N(0, I)) +
  gamma * TC(z)`` with ``TC(z) = logit_0 - logit_1`` of the discriminator on ``z ~ q(z|x)``.
* Discriminator loss: cross-entropy of ``q(z)`` samples (class 0, the same ``z``) against
  ``permute_dims`` samples (class 1) of ``z'`` from an *independent second half-batch*
  ``batch["image_disc"]`` as in Kim & Mnih's Algorithm 1: the permuted samples then share no
  rows with the ``q(z)`` samples, so the discriminator cannot tell them apart by matching
  coordinates. Without that key the same batch is permuted (cheaper, slightly biased).
* AD-FactorVAE (paper Eq. 7) adds ``lambda * L_AD(M_a, M_b)``: the per-latent Grad-CAM maps
  (:func:`vae_xai.attention.latent_attention`) are computed inside the loss from the current
  parameters (the encoder is split with :func:`vae_xai.encoder_split.split_encoder`, fast
  ``dense_after`` path), so the gradient of ``L_AD`` flows through the attention computation
  (second order: through the feature map *and* through the Grad-CAM weights).

Pair choice ``(a, b)`` per sample (``ad_pair``):

* ``"attention"`` (default): the two latent dims with the largest total attention
  ``sum_hw M_i``. The paper uses the two dims "with the highest response"; measuring the
  response on the attention maps themselves picks the dims whose maps actually carry mass
  (a collapsed dim has a near-zero map, and ``L_AD`` with a zero map is 0 with no useful
  gradient), costs nothing extra and is exactly the quantity the loss acts on.
* ``"kl"``: largest per-dim ``KL(q(z_i|x) || N(0,1))`` (most informative dims for this x).
* ``"abs_mu"``: largest ``|mu_i|``.
* ``"random"``: a uniformly random pair of distinct dims per sample.
* ``"all"``: ``L_AD`` averaged over all ``D(D-1)/2`` pairs.

The selection itself is not differentiated (indices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_xai import losses
from vae_xai.attention import Rectify, latent_attention, upsample
from vae_xai.encoder_split import split_encoder
from vae_xai.losses import reparameterize
from vae_xai.train import TrainState, UpdateFn

PairMethod = Literal["attention", "kl", "abs_mu", "random", "all"]
PAIR_METHODS: tuple[str, ...] = ("attention", "kl", "abs_mu", "random", "all")
Batch = Mapping[str, Any]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]

__all__ = [
    "PAIR_METHODS",
    "attention_maps",
    "factor_vae_loss_fn",
    "factor_vae_optimizer",
    "factor_vae_update_fn",
    "pair_ad_loss",
    "pair_scores",
    "random_pairs",
    "representation_fn",
    "reparameterize",
    "top_pairs",
]


def factor_vae_optimizer(
    *,
    vae_lr: float = 1e-4,
    vae_b1: float = 0.9,
    vae_b2: float = 0.999,
    disc_lr: float = 1e-4,
    disc_b1: float = 0.5,
    disc_b2: float = 0.9,
) -> optax.GradientTransformation:
    """Adam for ``params["vae"]`` and a separate Adam for ``params["disc"]``.

    Defaults are Kim & Mnih's dSprites settings: VAE lr 1e-4, betas (0.9, 0.999);
    discriminator lr 1e-4, betas (0.5, 0.9).

    Args:
      vae_lr: VAE learning rate.
      vae_b1: VAE Adam ``b1``.
      vae_b2: VAE Adam ``b2``.
      disc_lr: discriminator learning rate.
      disc_b1: discriminator Adam ``b1``.
      disc_b2: discriminator Adam ``b2``.

    Returns:
      An ``optax.multi_transform`` whose init/update raise ``ValueError`` unless the params are
      ``{"vae": ..., "disc": ...}``.
    """

    def labels(params: Any) -> Any:
        if not isinstance(params, Mapping) or set(params) != {"vae", "disc"}:
            raise ValueError(
                "FactorVAE params must be a dict {'vae': ..., 'disc': ...}; got "
                f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
            )
        return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}

    return optax.multi_transform(
        {
            "vae": optax.adam(vae_lr, b1=vae_b1, b2=vae_b2),
            "disc": optax.adam(disc_lr, b1=disc_b1, b2=disc_b2),
        },
        labels,
    )


def attention_maps(
    model: nn.Module,
    vae_params: Any,
    x: jax.Array,
    *,
    layer: str = "conv4",
    dense_after: str | None = "fc1",
    score: Literal["mean", "sample"] = "mean",
    key: jax.Array | None = None,
    rectify: Rectify = "relu",
    upsample_to: tuple[int, int] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Per-latent attention maps of a VAE and its encoder outputs, differentiable in params.

    Args:
      model: a VAE with an ``encode(x) -> {"mu", "logvar", ...}`` method.
      vae_params: its parameters (the ``"params"`` collection).
      x: images ``(B, H, W, C)``.
      layer: the encoder submodule whose output is the feature map (e.g. ``"conv4"``).
      dense_after: the Dense consuming ``flatten(features)`` (fast exact path), or None for
        the generic path (needed when ``layer`` is not the last conv layer).
      score: ``"mean"`` (``mu``) or ``"sample"`` (``mu + eps * sigma`` with ``eps`` from
        ``key``, the same ``eps`` as :func:`reparameterize` with that key).
      key: PRNG key for ``score="sample"``.
      rectify: map rectifier (paper: ReLU).
      upsample_to: if set, maps are bilinearly resized to ``(H, W)``.

    Returns:
      ``(maps (B, D, h, w), encoder_outputs)``; ``h, w`` = the layer's size or ``upsample_to``.
    """
    split = split_encoder(
        model, {"params": vae_params}, x, layer=layer, method="encode", dense_after=dense_after
    )
    maps = latent_attention(
        split.head_fn,
        split.features,
        score=score,
        key=key,
        rectify=rectify,
        shift_head_fn=split.shift_head_fn,
    )
    if upsample_to is not None:
        maps = upsample(maps, upsample_to)
    return maps, split.outputs


def pair_scores(
    maps: jax.Array, mu: jax.Array, logvar: jax.Array, *, method: PairMethod = "attention"
) -> jax.Array:
    """The per-sample "response" of each latent dim, used to pick the ``L_AD`` pair.

    Args:
      maps: per-latent attention maps, ``(B, D, h, w)``.
      mu: posterior means, ``(B, D)``.
      logvar: posterior log-variances, ``(B, D)``.
      method: ``"attention"``: ``sum_hw M_i``; ``"kl"``: per-dim KL to N(0, 1);
        ``"abs_mu"``: ``|mu_i|``.

    Returns:
      ``(B, D)``.

    Raises:
      ValueError: unknown ``method``.
    """
    if method == "attention":
        return jnp.sum(maps, axis=(2, 3))
    if method == "kl":
        return losses.kl_per_latent(mu, logvar)
    if method == "abs_mu":
        return jnp.abs(mu)
    raise ValueError(f'pair_scores method must be "attention", "kl" or "abs_mu"; got {method!r}')


def top_pairs(scores: jax.Array) -> jax.Array:
    """Indices of the two largest scores per row, largest first (not differentiated).

    Args:
      scores: ``(B, D)`` with ``D >= 2``.

    Returns:
      ``(B, 2)`` int32.

    Raises:
      ValueError: ``scores`` is not ``(B, D)`` with ``D >= 2``.
    """
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (B, D) with D >= 2; got {scores.shape}")
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(scores), 2)
    return idx.astype(jnp.int32)


def random_pairs(key: jax.Array, batch: int, dim: int) -> jax.Array:
    """A uniformly random pair of distinct latent dims per sample.

    Args:
      key: PRNG key.
      batch: number of samples ``B``.
      dim: number of latent dims ``D`` (>= 2).

    Returns:
      ``(B, 2)`` int32.

    Raises:
      ValueError: ``dim < 2``.
    """
    if dim < 2:
        raise ValueError(f"need at least 2 latent dims for a pair; got {dim}")
    k1, k2 = jax.random.split(key)
    a = jax.random.randint(k1, (batch,), 0, dim)
    b = (a + jax.random.randint(k2, (batch,), 1, dim)) % dim
    return jnp.stack([a, b], axis=1).astype(jnp.int32)


def pair_ad_loss(
    maps: jax.Array,
    mu: jax.Array,
    logvar: jax.Array,
    *,
    pair: PairMethod = "attention",
    key: jax.Array | None = None,
    eps: float = 1e-8,
) -> tuple[jax.Array, jax.Array | None]:
    """``L_AD`` of the chosen latent pair per sample (paper Eq. 6).

    Args:
      maps: per-latent attention maps ``(B, D, h, w)``, non-negative.
      mu: posterior means ``(B, D)`` (for ``pair="kl"``/``"abs_mu"``).
      logvar: posterior log-variances ``(B, D)`` (for ``pair="kl"``).
      pair: see the module docstring.
      key: PRNG key for ``pair="random"``.
      eps: denominator guard of :func:`vae_xai.losses.attention_disentanglement_loss`.

    Returns:
      ``(loss (B,), pairs (B, 2) int32)``; ``pairs`` is None for ``pair="all"``.

    Raises:
      ValueError: ``maps`` not 4-D, ``D < 2``, unknown ``pair``, or ``pair="random"`` without
        ``key``.
    """
    if maps.ndim != 4:
        raise ValueError(f"maps must be (B, D, h, w); got {maps.shape}")
    b, d = maps.shape[:2]
    if d < 2:
        raise ValueError(f"L_AD needs at least 2 latent dims; got D={d}")
    if pair == "all":
        ii, jj = np.triu_indices(d, k=1)
        per_pair = losses.attention_disentanglement_loss(
            maps[:, ii].reshape(-1, *maps.shape[2:]),
            maps[:, jj].reshape(-1, *maps.shape[2:]),
            eps=eps,
        )
        return jnp.mean(per_pair.reshape(b, len(ii)), axis=1), None
    if pair == "random":
        if key is None:
            raise ValueError('pair="random" needs a PRNG key')
        pairs = random_pairs(key, b, d)
    elif pair in ("attention", "kl", "abs_mu"):
        pairs = top_pairs(pair_scores(maps, mu, logvar, method=pair))
    else:
        raise ValueError(f"ad pair must be one of {PAIR_METHODS}; got {pair!r}")
    chosen = jnp.take_along_axis(maps, pairs[:, :, None, None], axis=1)  # (B, 2, h, w)
    return losses.attention_disentanglement_loss(chosen[:, 0], chosen[:, 1], eps=eps), pairs


def factor_vae_loss_fn(
    model: nn.Module,
    disc: nn.Module,
    *,
    gamma: float = 40.0,
    ad_weight: float = 0.0,
    ad_layer: str = "conv4",
    ad_dense_after: str | None = "fc1",
    ad_pair: PairMethod = "attention",
    ad_score: Literal["mean", "sample"] = "sample",
    ad_upsample: bool = False,
    ad_eps: float = 1e-8,
    image_key: str = "image",
    disc_image_key: str | None = "image_disc",
) -> LossFn:
    """The combined FactorVAE / AD-FactorVAE objective ``loss(params, batch, key)``.

    Args:
      model: a VAE with ``encode(x) -> {"mu", "logvar", <ad_layer> ...}`` and
        ``decode(z) -> Bernoulli logits`` (e.g. :func:`vae_xai.models.conv_vae.dsprites_vae`).
      disc: the TC discriminator (:class:`vae_xai.models.factor_vae.FactorDiscriminator`).
      gamma: TC weight (paper Table 3: 40).
      ad_weight: ``lambda`` of Eq. 7; 0 gives plain FactorVAE (no attention is computed).
      ad_layer: encoder layer whose attention maps enter ``L_AD``.
      ad_dense_after: the Dense after ``flatten(ad_layer)`` (fast path) or None (generic).
      ad_pair: how the pair of latent dims is chosen (module docstring).
      ad_score: attention score, ``"sample"`` (the ``z`` that is decoded, paper Sec. 3.2)
        or ``"mean"``.
      ad_upsample: compute ``L_AD`` on maps resized to the input size (else at the layer's
        resolution; the overlap ratio is nearly the same and the small maps are cheaper).
      ad_eps: ``L_AD`` denominator guard.
      image_key: batch key of the ``(B, H, W, C)`` images for the VAE loss.
      disc_image_key: batch key of an independent half-batch for the permuted samples; if
        None or absent from the batch, the VAE batch's own ``z`` is permuted.

    Returns:
      ``loss(params, batch, key) -> (scalar, metrics)`` with ``params = {"vae", "disc"}``;
      the scalar's gradient is each network's own gradient (see the module docstring).
      Metrics: ``loss`` (the VAE objective incl. ``lambda * L_AD``), ``recon``, ``kl``,
      ``tc``, ``disc_loss``, ``disc_acc`` and, when ``ad_weight > 0``, ``ad`` (mean L_AD).
      The loss raises ``KeyError`` for a batch without ``image_key``.

    Raises:
      ValueError: negative ``gamma``/``ad_weight``, or unknown ``ad_pair``/``ad_score``.
    """
    if gamma < 0 or ad_weight < 0:
        raise ValueError(f"gamma and ad_weight must be >= 0; got {gamma}, {ad_weight}")
    if ad_pair not in PAIR_METHODS:
        raise ValueError(f"ad_pair must be one of {PAIR_METHODS}; got {ad_pair!r}")
    if ad_score not in ("mean", "sample"):
        raise ValueError(f'ad_score must be "mean" or "sample"; got {ad_score!r}')
    use_ad = ad_weight > 0

    def loss_fn(params: Any, batch: Batch, key: jax.Array):
        if image_key not in batch:
            raise KeyError(f"batch has no {image_key!r}; keys are {sorted(batch)}")
        x = batch[image_key]
        vae_p = params["vae"]
        disc_p = params["disc"]
        k_z, k_z2, k_perm, k_pair = jax.random.split(key, 4)

        if use_ad:
            maps, enc = attention_maps(
                model,
                vae_p,
                x,
                layer=ad_layer,
                dense_after=ad_dense_after,
                score=ad_score,
                key=k_z,
                upsample_to=tuple(x.shape[1:3]) if ad_upsample else None,
            )
        else:
            enc = model.apply({"params": vae_p}, x, method="encode")
        mu, logvar = enc["mu"], enc["logvar"]
        z = reparameterize(mu, logvar, k_z)
        logits = model.apply({"params": vae_p}, z, method="decode")
        rec = losses.bernoulli_nll(logits, x)
        kl = losses.gaussian_kl(mu, logvar)
        tc = losses.total_correlation(disc.apply({"params": jax.lax.stop_gradient(disc_p)}, z))
        vae_loss = jnp.mean(rec + kl + gamma * tc)
        metrics = {"recon": jnp.mean(rec), "kl": jnp.mean(kl), "tc": jnp.mean(tc)}
        if use_ad:
            l_ad, _ = pair_ad_loss(maps, mu, logvar, pair=ad_pair, key=k_pair, eps=ad_eps)
            metrics["ad"] = jnp.mean(l_ad)
            vae_loss = vae_loss + ad_weight * metrics["ad"]
        metrics["loss"] = vae_loss

        z_q = jax.lax.stop_gradient(z)
        if disc_image_key is not None and disc_image_key in batch:
            enc2 = model.apply(
                {"params": jax.lax.stop_gradient(vae_p)}, batch[disc_image_key], method="encode"
            )
            z_other = jax.lax.stop_gradient(reparameterize(enc2["mu"], enc2["logvar"], k_z2))
        else:
            z_other = z_q
        z_perm = losses.permute_dims(z_other, k_perm)
        logits_q = disc.apply({"params": disc_p}, z_q)
        logits_p = disc.apply({"params": disc_p}, z_perm)
        d_loss = losses.discriminator_loss(logits_q, logits_p)
        metrics["disc_loss"] = d_loss
        metrics["disc_acc"] = 0.5 * (
            jnp.mean(jnp.argmax(logits_q, -1) == 0) + jnp.mean(jnp.argmax(logits_p, -1) == 1)
        )
        return vae_loss + d_loss, metrics

    return loss_fn


def factor_vae_update_fn(
    model: nn.Module,
    disc: nn.Module,
    optimizer: optax.GradientTransformation,
    **loss_kwargs: Any,
) -> UpdateFn:
    """Build ``update(state, batch, key) -> (state, metrics)`` for :func:`vae_xai.train.fit`.

    One ``jax.grad`` of :func:`factor_vae_loss_fn` and one optimizer step for both networks.

    Args:
      model: the VAE (see :func:`factor_vae_loss_fn`).
      disc: the TC discriminator.
      optimizer: usually :func:`factor_vae_optimizer`; ``state.params`` is
        ``{"vae": ..., "disc": ...}``.
      **loss_kwargs: passed to :func:`factor_vae_loss_fn` (``gamma``, ``ad_weight``, ...); use
        ``ad_weight > 0`` for AD-FactorVAE.

    Returns:
      The update function.
    """
    loss_fn = factor_vae_loss_fn(model, disc, **loss_kwargs)

    def update(state: TrainState, batch: Batch, key: jax.Array):
        grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(params=params, opt_state=opt_state), metrics

    return update


def representation_fn(model: nn.Module, vae_params: Any) -> Callable[[Any], jax.Array]:
    """Jitted ``images -> mu``: the representation the disentanglement metrics score.

    Args:
      model: a VAE with an ``encode(x) -> {"mu", ...}`` method.
      vae_params: its ``"params"`` collection (passed to the jitted function as an argument,
        not baked in as a constant).

    Returns:
      ``encode(x) -> mu (N, D)`` for images ``(N, H, W, C)``; ``(N, H, W)`` is accepted too (a
      channel axis is added), so ground-truth data may hand over plain renders.
    """

    @jax.jit
    def apply(params: Any, x: jax.Array) -> jax.Array:  # params as an argument, not a constant
        x = jnp.asarray(x, jnp.float32)
        if x.ndim == 3:
            x = x[..., None]
        return model.apply({"params": params}, x, method="encode")["mu"]

    def encode(x: Any) -> jax.Array:
        return apply(vae_params, x)

    return encode
