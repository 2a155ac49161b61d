"""VAE anomaly maps beyond the paper: input gradients, their combinations, energy projection.

Pure functions on a VAE given as two callables, so they work on any Flax VAE (Linen through
``model.apply``, NNX through the module's methods) or any JAX function pair:

* ``encode_fn(x) -> (mu, logvar)``: ``x`` ``(B, H, W, C)`` in [0, 1], each output ``(B, D)``;
* ``decode_fn(z) -> out``: ``z`` ``(B, D)`` to ``(B, H, W, C)``; ``out`` is the decoder's
  *logits* (image mean ``sigmoid(out)``, the convention of :mod:`vae_xai.models`) or, with
  ``decoder_output="mean"``, the image mean itself.

Both must act per sample (eval mode: BatchNorm with running statistics). The maps:

* :func:`input_gradients` -- Zimmerer et al., "Unsupervised anomaly localization using
  variational auto-encoders" (MICCAI 2019): ``|d L / d x|`` of the ELBO, its KL term or its
  reconstruction term, channel-reduced, optionally Gaussian-smoothed (:func:`smooth_maps`).
* :func:`product_combination` ("combi": set-normalized KL-gradient map times reconstruction
  error) and :func:`additive_combination` (the sum of two set-normalized maps), with the
  normalization range of :func:`set_range` taken over a whole set of images, never per image.
* :func:`project` -- Dehaene et al., "Iterative energy-based projection on a normal data
  manifold for anomaly localization" (ICLR 2020): gradient descent from the test image ``x0``
  on ``E(x) = L_rec(x, f(x)) + lam * ||x - x0||_1 (+ kl_weight * KL)``, each step weighted per
  pixel by the current squared reconstruction error; the map is ``|x0 - x_T|``
  (:func:`projection_map`).
* :func:`reconstruction_residual` -- the reconstruction error Gaussian-smoothed, and the SSIM
  residual ``1 - SSIM(x, f(x))`` of Bergmann et al.'s AE-SSIM (VISAPP 2019;
  :mod:`vae_xai.localization.ssim`), optionally smoothed.

The ``*_maps`` functions run them over a test set in padded batches (one compile) and return
``(N, H, W)`` float32 NumPy, like :mod:`vae_xai.localization.maps`. The registered producers
(:class:`InputGradient`, :class:`GradientCombination`, :class:`EnergyProjection`,
:class:`AttentionWeightedRecon`, :class:`ReconstructionResidual`) are selected by
``config.eval.maps``; see :func:`producers_from_config` for the fields and defaults.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from vae_xai import distributed, validation
from vae_xai.attention import released_code_attention
from vae_xai.encoder_split import split_encoder
from vae_xai.localization.maps import (
    ANOMALY_CRITERIA,
    PRODUCERS,
    REFERENCES,
    AnomalyAttention,
    Context,
    ReconstructionError,
    _batches,
    _check_images,
    _padded,
    check_entry,
    eval_layers,
    eval_names,
    eval_references,
    eval_sampling,
    register_producer,
)
from vae_xai.localization.ssim import ssim_residual
from vae_xai.losses import kl_per_latent, reparameterize

EncodeFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
DecodeFn = Callable[[jax.Array], jax.Array]
Term = Literal["elbo", "kl", "rec"]
Likelihood = Literal["gaussian", "bernoulli"]
DecoderOutput = Literal["logits", "mean"]
ChannelReduce = Literal["sum", "mean", "max"]

TERMS = ("elbo", "kl", "rec")
CHANNEL_REDUCTIONS = ("sum", "mean", "max")
LIKELIHOODS = ("gaussian", "bernoulli")
DECODER_OUTPUTS = ("logits", "mean")

__all__ = [
    "ATTENTION_VARIANTS",
    "MAP_NAMES",
    "AttentionWeightedRecon",
    "EnergyProjection",
    "GradientCombination",
    "InputGradient",
    "RESIDUALS",
    "ReconstructionResidual",
    "additive_combination",
    "energy",
    "eval_maps",
    "gaussian_kernel",
    "input_gradient_maps",
    "input_gradients",
    "map_producers",
    "model_fns",
    "normalize_by_range",
    "pixel_nll",
    "product_combination",
    "project",
    "projection_map",
    "projection_maps",
    "projection_step",
    "ReleasedAttention",
    "reconstruction_residual",
    "released_attention_maps",
    "residual_maps",
    "set_range",
    "smooth_maps",
]


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}")


def model_fns(model: Any, variables: Mapping[str, Any]) -> tuple[EncodeFn, DecodeFn]:
    """``(encode_fn, decode_fn)`` of a Linen VAE of :mod:`vae_xai.models`, in eval mode.

    For an NNX VAE write the two lambdas directly, e.g. ``lambda x: model.encode(x)`` after
    ``model.eval()``.

    Args:
      model: the Linen VAE (``encode`` and ``decode`` methods).
      variables: its variables.

    Returns:
      ``encode_fn(x) = (mu, logvar)`` from ``model.encode(x, train=False)`` and
      ``decode_fn(z)``, the logits of ``model.decode(z)``.
    """

    def encode_fn(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = model.apply(variables, x, train=False, method="encode")
        return out["mu"], out["logvar"]

    def decode_fn(z: jax.Array) -> jax.Array:
        return model.apply(variables, z, method="decode")

    return encode_fn, decode_fn


# ----------------------------------------------------------------------------- the loss


def image_mean(out: ArrayLike, *, decoder_output: DecoderOutput = "logits") -> jax.Array:
    """The decoded image mean: ``sigmoid(out)`` for logits, else ``out``.

    Args:
      out: the decoder output ``(B, H, W, C)``.
      decoder_output: ``"logits"`` or ``"mean"``.

    Returns:
      ``(B, H, W, C)``.

    Raises:
      ValueError: an unknown ``decoder_output``.
    """
    _check_choice("decoder_output", decoder_output, DECODER_OUTPUTS)
    out = jnp.asarray(out)
    return jax.nn.sigmoid(out) if decoder_output == "logits" else out


def pixel_nll(
    out: ArrayLike,
    x: ArrayLike,
    *,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    decoder_output: DecoderOutput = "logits",
    eps: float = 1e-6,
) -> jax.Array:
    """Per-pixel reconstruction NLL, summing to :func:`vae_xai.losses.reconstruction_nll`.

    ``"gaussian"``: ``(x - mean)^2 / (2 variance)`` (the constant dropped, as in training);
    ``"bernoulli"``: the cross-entropy of ``x`` in [0, 1] (on the logits, or on the mean
    clipped to ``[eps, 1 - eps]`` when the decoder gives the mean).

    Args:
      out: the decoder output ``(B, H, W, C)``.
      x: the images ``(B, H, W, C)`` in [0, 1].
      likelihood: ``"gaussian"`` or ``"bernoulli"``, the training likelihood.
      variance: the Gaussian's variance (unused for Bernoulli).
      decoder_output: whether ``decode_fn`` gives ``"logits"`` or the image ``"mean"``.
      eps: the clipping of the mean for Bernoulli on ``"mean"`` output.

    Returns:
      ``(B, H, W, C)``.

    Raises:
      ValueError: an unknown ``likelihood`` or ``decoder_output``.
    """
    _check_choice("likelihood", likelihood, LIKELIHOODS)
    _check_choice("decoder_output", decoder_output, DECODER_OUTPUTS)
    out = jnp.asarray(out)
    x = jnp.asarray(x, out.dtype)
    if likelihood == "gaussian":
        return 0.5 * jnp.square(x - image_mean(out, decoder_output=decoder_output)) / variance
    if decoder_output == "logits":
        return optax.sigmoid_binary_cross_entropy(out, x)
    p = jnp.clip(out, eps, 1 - eps)
    return -(x * jnp.log(p) + (1 - x) * jnp.log1p(-p))


def _loss_terms(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x: jax.Array,
    *,
    likelihood: Likelihood,
    variance: float,
    decoder_output: DecoderOutput,
    num_samples: int,
    key: jax.Array | None,
) -> tuple[jax.Array, jax.Array]:
    """Per-image ``(rec, kl)``, each ``(B,)``: rec at ``z = mu`` or averaged over draws."""
    mu, logvar = encode_fn(x)
    kl = jnp.sum(kl_per_latent(mu, logvar), axis=-1)

    def rec_at(z: jax.Array) -> jax.Array:
        nll = pixel_nll(
            decode_fn(z),
            x,
            likelihood=likelihood,
            variance=variance,
            decoder_output=decoder_output,
        )
        return jnp.sum(nll.reshape(nll.shape[0], -1), axis=-1)

    if num_samples == 0:
        return rec_at(mu), kl
    keys = jax.random.split(key, num_samples)
    rec = jnp.mean(jax.lax.map(lambda k: rec_at(reparameterize(mu, logvar, k)), keys), axis=0)
    return rec, kl


# ----------------------------------------------------------------------------- smoothing


def gaussian_kernel(kernel_size: int, sigma: float) -> np.ndarray:
    """The normalized 2-D Gaussian kernel of Zimmerer et al.'s ``smooth_tensor``.

    As there, an even ``kernel_size`` is reduced by one (their default 8 becomes 7), so the
    kernel is centred; its entries sum to 1.

    Args:
      kernel_size: the side, >= 1 (even sizes reduced by one).
      sigma: the standard deviation in pixels, > 0.

    Returns:
      ``(k, k)`` float32.

    Raises:
      ValueError: ``kernel_size < 1`` or ``sigma <= 0``.
    """
    if kernel_size < 1:
        raise ValueError(f"kernel_size must be >= 1; got {kernel_size}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0; got {sigma}")
    k = kernel_size - 1 if kernel_size % 2 == 0 else kernel_size
    r = np.arange(k, dtype=np.float64) - (k - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def smooth_maps(maps: ArrayLike, *, kernel_size: int = 8, sigma: float = 3.0) -> jax.Array:
    """Gaussian-smoothed maps (:func:`gaussian_kernel`, zero padding, same size).

    Zero padding as in Zimmerer et al.'s ``Conv2d(padding=kernel_size // 2)``, so values near
    the border are pulled towards 0.

    Args:
      maps: ``(B, H, W)``.
      kernel_size: the kernel side; 0 or 1 returns the maps unchanged.
      sigma: the kernel's standard deviation.

    Returns:
      ``(B, H, W)``.

    Raises:
      ValueError: ``maps`` is not 3-D.
    """
    maps = jnp.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (B, H, W); got shape {maps.shape}")
    if kernel_size in (0, 1):
        return maps
    kernel = jnp.asarray(gaussian_kernel(kernel_size, sigma), maps.dtype)
    out = jax.lax.conv_general_dilated(
        maps[..., None], kernel[:, :, None, None], (1, 1), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )  # fmt: skip
    return out[..., 0]


def _reduce_channels(x: jax.Array, how: ChannelReduce) -> jax.Array:
    _check_choice("channel_reduce", how, CHANNEL_REDUCTIONS)
    return {"sum": jnp.sum, "mean": jnp.mean, "max": jnp.max}[how](x, axis=-1)


# ----------------------------------------------------------------------------- gradients


def input_gradients(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x: ArrayLike,
    *,
    term: Term = "kl",
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    beta: float = 1.0,
    decoder_output: DecoderOutput = "logits",
    num_samples: int = 0,
    key: jax.Array | None = None,
    channel_reduce: ChannelReduce = "sum",
    smooth_kernel: int = 0,
    smooth_sigma: float = 3.0,
) -> jax.Array:
    """Input-gradient anomaly maps ``(B, H, W)`` of Zimmerer et al. (MICCAI 2019).

    For each image, the magnitude ``|dL/dx|`` of the gradient of its own loss ``L`` with
    respect to its pixels, where ``L`` is (``term``) the negative ELBO ``rec + beta * KL``,
    the KL term ``KL(q(z|x) || N(0, I))`` alone, or the reconstruction NLL ``rec`` alone
    (:func:`pixel_nll` summed over pixels). A normal image sits in a flat region of the
    loss; pixels that would most change the loss are where the image departs from normal.

    Args:
      encode_fn, decode_fn: the VAE (module doc); jit-able.
      x: images ``(B, H, W, C)`` in [0, 1].
      term: ``"elbo"``, ``"kl"`` or ``"rec"``.
      likelihood, variance, beta: the training loss's (``variance`` only for Gaussian).
      decoder_output: whether ``decode_fn`` gives logits or the image mean.
      num_samples: 0 decodes ``z = mu`` (deterministic; their evaluation mode); ``S > 0``
        averages ``rec`` over ``S`` reparameterized draws from ``key`` before differentiating
        (so the map is ``|mean_s dL_s/dx|``). The KL term is analytic either way.
      channel_reduce: how ``|dL/dx|`` ``(B, H, W, C)`` becomes ``(B, H, W)``.
      smooth_kernel, smooth_sigma: Gaussian smoothing after the reduction
        (:func:`smooth_maps`; 0 = none; theirs is 8 -> 7, sigma 3).

    Returns:
      ``(B, H, W)`` non-negative maps.

    Differences from their released code (``MIC-DKFZ/vae-anomaly-experiments``,
    ``brats_script.py``: ``get_inpt_grad``, ``loss_function``, ``utils.util.smooth_tensor``):
    (1) they differentiate the batch *mean* of the loss, which scales every map by
    ``1 / batch size`` (a last, smaller batch gets larger values); we differentiate each
    image's own loss, so maps do not depend on batching. (2) Their ``VAE.forward`` returns
    ``std`` and ``loss_function`` uses it as ``log std`` (the KL is then that of
    ``N(mu, exp(std)^2)``); we use the model's ``logvar`` as trained. (3) Their likelihood
    is a Gaussian with fixed std on a decoder that outputs the mean; ours is the training
    likelihood of the model (Gaussian on ``sigmoid(logits)`` or Bernoulli). (4) Their
    images have one channel; we reduce channels after taking magnitudes.
    """
    _check_choice("term", term, TERMS)
    _check_choice("channel_reduce", channel_reduce, CHANNEL_REDUCTIONS)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0; got {num_samples}")
    if num_samples > 0 and key is None:
        raise ValueError("num_samples > 0 needs a key for the latent draws")
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be (B, H, W, C); got shape {x.shape}")

    def total(xx: jax.Array) -> jax.Array:
        rec, kl = _loss_terms(
            encode_fn, decode_fn, xx, likelihood=likelihood, variance=variance,
            decoder_output=decoder_output, num_samples=num_samples, key=key,
        )  # fmt: skip
        per_image = {"elbo": rec + beta * kl, "kl": kl, "rec": rec}[term]
        return jnp.sum(per_image)  # images are independent: d/dx_b of the sum is image b's

    grad = jax.grad(total)(x)
    maps = _reduce_channels(jnp.abs(grad), channel_reduce)
    return smooth_maps(maps, kernel_size=smooth_kernel, sigma=smooth_sigma)


def _over_set(
    fn: Callable[[jax.Array, jax.Array], jax.Array],
    images: np.ndarray,
    key: jax.Array,
    batch_size: int,
) -> np.ndarray:
    """``fn(batch, fold_in(key, b))`` jitted over padded batches, concatenated ``(N, ...)``.

    ``fn`` closes over the model's weights (through ``encode_fn``/``decode_fn``); jitting it
    as is would bake them into the program as constants, which XLA then constant-folds
    (seconds per dense layer, and one more compilation per map). So ``fn`` is traced once and
    its closed-over arrays are passed to the jitted program as arguments.
    """
    batches = _batches(len(images), batch_size)
    example = (_padded(images, *batches[0], batch_size), jax.random.fold_in(key, 0))
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*example)
    tree = jax.tree.structure(shape)

    def apply(consts: Any, x: jax.Array, k: jax.Array) -> Any:
        return jax.tree.unflatten(tree, jax.core.eval_jaxpr(closed.jaxpr, consts, x, k))

    program = jax.jit(apply)

    def run(x: jax.Array, k: jax.Array) -> Any:
        return program(closed.consts, x, k)

    outs = distributed.map_batches(
        lambda b: run(_padded(images, *batches[b], batch_size), jax.random.fold_in(key, b)),
        len(batches),
    )
    return np.concatenate([m[: e - s] for m, (s, e) in zip(outs, batches, strict=True)])


def input_gradient_maps(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    images: ArrayLike,
    *,
    key: jax.Array | None = None,
    batch_size: int = 16,
    **kwargs: Any,
) -> np.ndarray:
    """:func:`input_gradients` over a test set, in padded batches (one compile).

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      images: ``(N, H, W, C)`` in [0, 1].
      key: noise for the latent draws; batch ``b`` draws from ``fold_in(key, b)`` when
        ``num_samples > 0``; default ``jax.random.key(0)``.
      batch_size: images per pass.
      **kwargs: those of :func:`input_gradients`.

    Returns:
      ``(N, H, W)`` float32.
    """
    images = _check_images(images)
    key = jax.random.key(0) if key is None else key
    return _over_set(
        lambda x, k: input_gradients(encode_fn, decode_fn, x, key=k, **kwargs),
        images,
        key,
        batch_size,
    ).astype(np.float32)


# ----------------------------------------------------------------------------- combinations


def set_range(maps: ArrayLike) -> tuple[float, float]:
    """``(min, max)`` of maps over the whole set: one range for every image.

    The localization metrics pool pixels over the set, so a normalization must be one affine
    map for all images (per-image min-max would erase which images are anomalous at all).

    Args:
      maps: ``(N, H, W)``.

    Returns:
      ``(lo, hi)`` floats.

    Raises:
      ValueError: empty maps or a NaN or inf.
    """
    maps = np.asarray(maps)
    if maps.size == 0 or not np.all(np.isfinite(maps)):
        raise ValueError("set_range needs a non-empty set of finite maps")
    return float(maps.min()), float(maps.max())


def normalize_by_range(maps: ArrayLike, *, lo: float, hi: float) -> np.ndarray:
    """``(maps - lo) / (hi - lo)``, one range for the whole set (:func:`set_range`).

    With ``hi == lo`` (a constant map) the result is all zeros. Maps outside the range (a
    range fixed on other images, e.g. the training set) fall outside [0, 1]; nothing is
    clipped, so the ordering of pixels is kept.

    Args:
      maps: any shape.
      lo: the value mapped to 0.
      hi: the value mapped to 1, ``>= lo``.

    Returns:
      float32, the shape of ``maps``.

    Raises:
      ValueError: ``hi < lo``.
    """
    maps = np.asarray(maps, np.float32)
    if not hi >= lo:
        raise ValueError(f"the range must have hi >= lo; got lo={lo}, hi={hi}")
    if hi == lo:
        return np.zeros_like(maps)
    return ((maps - lo) / (hi - lo)).astype(np.float32)


def product_combination(
    weight_maps: ArrayLike,
    recon_maps: ArrayLike,
    *,
    weight_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """ "combi" of Zimmerer et al.: the set-normalized weight map times the reconstruction error.

    Args:
      weight_maps: ``(N, H, W)``, e.g. the smoothed KL-gradient maps (or anomaly attention).
      recon_maps: ``(N, H, W)`` reconstruction error, used as is.
      weight_range: ``(lo, hi)`` for :func:`normalize_by_range`; default :func:`set_range`
        of ``weight_maps`` (the whole set passed in).

    Returns:
      ``(N, H, W)`` float32. Their code min-max normalizes the KL gradient of each *batch*
      before smoothing; ours normalizes once over the set (or a range fixed beforehand),
      after smoothing (the same up to the zero-padded border, smoothing being linear). Their
      reconstruction factor is the per-pixel Gaussian NLL ``-log p(x|z)`` (squared error
      plus a constant); the producers here use the squared error map ``recon``.
    """
    w = np.asarray(weight_maps, np.float32)
    r = np.asarray(recon_maps, np.float32)
    if w.shape != r.shape or w.ndim != 3:
        raise ValueError(f"maps must both be (N, H, W); got {w.shape} and {r.shape}")
    lo, hi = set_range(w) if weight_range is None else weight_range
    return normalize_by_range(w, lo=lo, hi=hi) * r


def additive_combination(
    a: ArrayLike,
    b: ArrayLike,
    *,
    a_range: tuple[float, float] | None = None,
    b_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """The additive form: ``norm(a) + norm(b)``, each normalized over the set.

    Zimmerer et al.'s ``combi_add`` (KL-gradient map plus reconstruction error, each
    min-max normalized over all evaluated pixels).

    Args:
      a: ``(N, H, W)``, e.g. the KL-gradient maps.
      b: ``(N, H, W)``, e.g. the reconstruction error.
      a_range: ``(lo, hi)`` of ``a``; default :func:`set_range` of ``a``.
      b_range: likewise for ``b``.

    Returns:
      ``(N, H, W)`` float32.

    Raises:
      ValueError: the maps are not both ``(N, H, W)`` of one shape.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"maps must both be (N, H, W); got {a.shape} and {b.shape}")
    a_lo, a_hi = set_range(a) if a_range is None else a_range
    b_lo, b_hi = set_range(b) if b_range is None else b_range
    return normalize_by_range(a, lo=a_lo, hi=a_hi) + normalize_by_range(b, lo=b_lo, hi=b_hi)


# ----------------------------------------------------------------------------- projection


def energy(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x: ArrayLike,
    x0: ArrayLike,
    *,
    lam: float = 1.0,
    kl_weight: float = 0.0,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    decoder_output: DecoderOutput = "logits",
) -> jax.Array:
    """Per-image energy ``L_rec(x, f(x)) + lam ||x - x0||_1 + kl_weight KL(x)``.

    ``f(x) = decode(mu(x))``, ``L_rec`` the summed :func:`pixel_nll` of the training
    likelihood (Dehaene et al.'s Eq. for ``E(x_t)``; the KL term is their VAE option).

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      x: the current images ``(B, H, W, C)``.
      x0: the test images ``(B, H, W, C)``.
      lam: weight of the L1 distance to ``x0``.
      kl_weight: weight of the KL term.
      likelihood: ``"gaussian"`` or ``"bernoulli"``, the training likelihood.
      variance: the Gaussian's variance (unused for Bernoulli).
      decoder_output: whether ``decode_fn`` gives ``"logits"`` or the image ``"mean"``.

    Returns:
      ``(B,)``.
    """
    e, _ = _energy_and_recon(
        encode_fn, decode_fn, x, x0, lam=lam, kl_weight=kl_weight, likelihood=likelihood,
        variance=variance, decoder_output=decoder_output,
    )  # fmt: skip
    return e


def _energy_and_recon(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x: ArrayLike,
    x0: ArrayLike,
    *,
    lam: float,
    kl_weight: float,
    likelihood: Likelihood,
    variance: float,
    decoder_output: DecoderOutput,
) -> tuple[jax.Array, jax.Array]:
    """:func:`energy` ``(B,)`` and the reconstruction ``f(x)`` ``(B, H, W, C)`` (one pass)."""
    x = jnp.asarray(x)
    mu, logvar = encode_fn(x)
    out = decode_fn(mu)
    nll = pixel_nll(out, x, likelihood=likelihood, variance=variance, decoder_output=decoder_output)
    rec = jnp.sum(nll.reshape(x.shape[0], -1), axis=-1)
    kl = jnp.sum(kl_per_latent(mu, logvar), axis=-1)
    l1 = jnp.sum(jnp.abs(x - jnp.asarray(x0)).reshape(x.shape[0], -1), axis=-1)
    return rec + lam * l1 + kl_weight * kl, image_mean(out, decoder_output=decoder_output)


def projection_step(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x: ArrayLike,
    x0: ArrayLike,
    *,
    step_size: float = 0.05,
    lam: float = 1.0,
    kl_weight: float = 0.0,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    decoder_output: DecoderOutput = "logits",
    clip: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """One step ``x - step_size * dE/dx * (x - f(x))^2`` of Dehaene et al.'s projection.

    The gradient of :func:`energy` (through ``f`` too; the L1 term's subgradient
    ``lam * sign(x - x0)``, 0 at ``x = x0``) weighted per pixel and channel by the current
    squared reconstruction error (held constant), which is what makes the descent change
    anomalous pixels and leave well-reconstructed ones alone.

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      x: the current images ``(B, H, W, C)``.
      x0: the test images.
      step_size: the step.
      lam: see :func:`energy`.
      kl_weight: see :func:`energy`.
      likelihood: ``"gaussian"`` or ``"bernoulli"``, the training likelihood.
      variance: the Gaussian's variance (unused for Bernoulli).
      decoder_output: whether ``decode_fn`` gives ``"logits"`` or the image ``"mean"``.
      clip: clip the new images to [0, 1].

    Returns:
      ``(x', E(x))``: the new images and the energy ``(B,)`` before the step.
    """
    x = jnp.asarray(x)
    x0 = jnp.asarray(x0)
    kw = dict(
        lam=lam, kl_weight=kl_weight, likelihood=likelihood, variance=variance,
        decoder_output=decoder_output,
    )  # fmt: skip

    smooth_kw = {**kw, "lam": 0.0}

    def total(xx: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        e, recon = _energy_and_recon(encode_fn, decode_fn, xx, x0, **smooth_kw)
        return jnp.sum(e), (e, recon)

    grad, (energies, recon) = jax.grad(total, has_aux=True)(x)
    # the L1 term's subgradient with sign(0) = 0 (jax.grad of abs gives 1 at 0, which would
    # push every pixel down on the first step, where x = x0)
    l1 = jnp.abs(x - x0)
    energies = energies + lam * jnp.sum(l1.reshape(x.shape[0], -1), axis=-1)
    grad = grad + lam * jnp.sign(x - x0)
    weight = jax.lax.stop_gradient(jnp.square(x - recon))
    new = x - step_size * grad * weight
    return (jnp.clip(new, 0.0, 1.0) if clip else new), energies


def project(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x0: ArrayLike,
    *,
    steps: int = 100,
    step_size: float = 0.05,
    lam: float = 1.0,
    kl_weight: float = 0.0,
    threshold: float | None = None,
    likelihood: Likelihood = "gaussian",
    variance: float = 0.5,
    decoder_output: DecoderOutput = "logits",
    clip: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Dehaene et al.'s iterative energy-based projection of ``x0``.

    ``steps`` iterations of :func:`projection_step` in one ``lax.scan`` (jit-able); with
    ``threshold``, an image whose energy is already ``<= threshold`` is frozen (a per-image
    mask inside the loop, so the batch keeps one shape).

    There is no official code; a third-party port (``ForrestPi/AnomalyDetection``,
    ``anomalyLocalization/code/eval.py``) uses the BCE loss, reuses the first step's gradient
    in later steps and L2-normalizes it; we follow the paper's algorithm: a fresh gradient of
    the full energy each step, weighted by ``(x_t - f(x_t))^2``, no normalization, and the
    likelihood the model was trained with. Clipping to [0, 1] (``clip``) is our addition.

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      x0: the test images ``(B, H, W, C)``.
      steps: iterations, >= 0.
      step_size: see :func:`projection_step`.
      lam: see :func:`energy`.
      kl_weight: see :func:`energy`.
      threshold: freeze an image once its energy is ``<= threshold``; ``None`` never.
      likelihood: ``"gaussian"`` or ``"bernoulli"``, the training likelihood.
      variance: the Gaussian's variance (unused for Bernoulli).
      decoder_output: whether ``decode_fn`` gives ``"logits"`` or the image ``"mean"``.
      clip: clip to [0, 1] after each step.

    Returns:
      ``(x_T, energies)``: the projected images ``(B, H, W, C)`` and the energy of every
      image before each step and after the last, ``(steps + 1, B)``.

    Raises:
      ValueError: ``steps < 0`` or ``x0`` not 4-D.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    x0 = jnp.asarray(x0)
    if x0.ndim != 4:
        raise ValueError(f"x0 must be (B, H, W, C); got shape {x0.shape}")
    kw = dict(
        lam=lam, kl_weight=kl_weight, likelihood=likelihood, variance=variance,
        decoder_output=decoder_output,
    )  # fmt: skip

    def body(x: jax.Array, _: Any) -> tuple[jax.Array, jax.Array]:
        new, e = projection_step(encode_fn, decode_fn, x, x0, step_size=step_size, clip=clip, **kw)
        if threshold is not None:
            active = (e > threshold)[:, None, None, None]
            new = jnp.where(active, new, x)
        return new, e

    x_t, energies = jax.lax.scan(body, x0, None, length=steps)
    final = energy(encode_fn, decode_fn, x_t, x0, **kw)
    return x_t, jnp.concatenate([energies.reshape(steps, -1), final[None]], axis=0)


def projection_map(
    x0: ArrayLike, x_t: ArrayLike, *, channel_reduce: ChannelReduce = "sum"
) -> jax.Array:
    """``|x0 - x_T|`` reduced over channels: what the projection changed.

    Args:
      x0: the test images ``(B, H, W, C)``.
      x_t: the projected images.
      channel_reduce: ``"sum"``, ``"mean"`` or ``"max"``.

    Returns:
      ``(B, H, W)``.
    """
    return _reduce_channels(jnp.abs(jnp.asarray(x0) - jnp.asarray(x_t)), channel_reduce)


def projection_maps(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    images: ArrayLike,
    *,
    batch_size: int = 16,
    channel_reduce: ChannelReduce = "sum",
    **kwargs: Any,
) -> np.ndarray:
    """:func:`project` over a test set, each batch's map :func:`projection_map`.

    Each padded batch is one jitted ``lax.scan``; memory is that of one forward and backward
    pass of ``batch_size`` images.

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      images: ``(N, H, W, C)`` in [0, 1].
      batch_size: images per pass.
      channel_reduce: ``"sum"``, ``"mean"`` or ``"max"``.
      **kwargs: those of :func:`project`.

    Returns:
      ``(N, H, W)`` float32.
    """
    images = _check_images(images)
    _check_choice("channel_reduce", channel_reduce, CHANNEL_REDUCTIONS)

    def one(x: jax.Array, k: jax.Array) -> jax.Array:
        del k
        x_t, _ = project(encode_fn, decode_fn, x, **kwargs)
        return projection_map(x, x_t, channel_reduce=channel_reduce)

    return _over_set(one, images, jax.random.key(0), batch_size).astype(np.float32)


# ----------------------------------------------------------------------------- attention


def released_attention_maps(
    model: Any,
    variables: Mapping[str, Any],
    images: ArrayLike,
    *,
    layer: str,
    batch_size: int = 16,
) -> np.ndarray:
    """The released-code attention variant at encoder ``layer`` over a test set.

    :func:`vae_xai.attention.released_code_attention`. As in the authors' code, the gradient
    is RMS-normalized over the whole *batch*, so the maps depend on ``batch_size`` (padding
    rows included).

    Args:
      model: the VAE module.
      variables: its variables.
      images: ``(N, H, W, C)`` in [0, 1].
      layer: the encoder layer.
      batch_size: images per pass.

    Returns:
      ``(N, H, W)`` float32 at the input resolution.
    """
    images = _check_images(images)
    size = tuple(images.shape[1:3])

    def one(x: jax.Array, k: jax.Array) -> jax.Array:
        del k
        split = split_encoder(model, variables, x, layer=layer, method="encode", train=False)
        return released_code_attention(split.head_fn, split.features, output_size=size)

    return _over_set(one, images, jax.random.key(0), batch_size).astype(np.float32)


# ----------------------------------------------------------------------------- producers
#
# Each producer class that ``eval.maps`` selects lists the names it answers to in
# ``map_names``, builds its instances from ``config.eval`` in ``from_config`` and gives each
# the ``map_name`` that selected it; its constructor checks its arguments and names the
# config field in a ConfigError.


def _block(e: Mapping[str, Any], field: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The ``eval.<field>`` block over ``defaults``; an unknown key is a ConfigError."""
    block = e.get(field) or {}
    block = block.to_dict() if hasattr(block, "to_dict") else dict(block)
    unknown = sorted(set(block) - set(defaults))
    if unknown:
        raise validation.ConfigError(
            f"eval.{field}", f"unknown keys {unknown}; known: {sorted(defaults)}"
        )
    return {**defaults, **block}


def _defaults(cls: type, *names: str) -> dict[str, Any]:
    """The dataclass defaults of ``cls``'s fields ``names`` (all with a default if none)."""
    fields = [f for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
    return {f.name: f.default for f in fields if not names or f.name in names}


def _check_integer(field: str, value: Any, minimum: int) -> int:
    """``value`` as an int, checked to be an integer ``>= minimum`` (ConfigError on ``field``)."""
    check_entry(validation.at_least, field, value, minimum)
    return int(value)


def _check_finite(field: str, value: Any, *, minimum: float | None = None) -> None:
    """``value`` is a finite real number (``>= minimum`` if given), else a ConfigError."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (minimum is None or value >= minimum):
        return
    bound = "" if minimum is None else f" and >= {minimum}"
    raise validation.ConfigError(field, f"must be a finite number{bound}; got {value!r}")


def map_producers() -> dict[str, type]:
    """The producer class of every name ``eval.maps`` accepts.

    Returns:
      ``{name: class}`` over the registered classes with ``map_names``, in registration order.
    """
    return {name: cls for cls in PRODUCERS.values() for name in getattr(cls, "map_names", ())}


def eval_maps(eval_config: Mapping[str, Any]) -> tuple[str, ...]:
    """``eval.maps`` (default none): names of :func:`map_producers`, each at most once.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The names, in order.

    Raises:
      ConfigError: naming ``eval.maps``, for an unknown or repeated name.
    """
    names = eval_names(eval_config, "maps", (), tuple(map_producers()))
    if len(set(names)) != len(names):
        raise validation.ConfigError("eval.maps", f"names a producer twice: {list(names)}")
    return names


@dataclasses.dataclass(frozen=True)
class GradientSettings:
    """The ``eval.grad`` block shared by the input-gradient maps and their combinations.

    Attributes:
      num_samples: latent draws averaged (0: ``z = mu``), see :func:`input_gradients`.
      channel_reduce: ``"sum"``, ``"mean"`` or ``"max"``.
      smooth_kernel: Gaussian smoothing kernel side (0: none; 8 becomes 7, Zimmerer's).
      smooth_sigma: its standard deviation.

    Raises:
      ConfigError: naming the ``eval.grad.<key>`` that is out of range.
    """

    num_samples: int = 0
    channel_reduce: str = "sum"
    smooth_kernel: int = 8
    smooth_sigma: float = 3.0

    def __post_init__(self) -> None:
        for key in ("num_samples", "smooth_kernel"):
            value = _check_integer(f"eval.grad.{key}", getattr(self, key), 0)
            object.__setattr__(self, key, value)
        check_entry(
            validation.one_of, "eval.grad.channel_reduce", self.channel_reduce, CHANNEL_REDUCTIONS
        )
        check_entry(validation.positive, "eval.grad.smooth_sigma", self.smooth_sigma)

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any]) -> GradientSettings:
        """``eval.grad`` over :data:`GRAD_DEFAULTS` (read whether or not a map uses it).

        Args:
          eval_config: the ``config.eval`` mapping.

        Returns:
          The settings.

        Raises:
          ConfigError: an unknown key or a value out of range.
        """
        return cls(**_block(eval_config, "grad", GRAD_DEFAULTS))


def _likelihood_kwargs(ctx: Context) -> dict[str, Any]:
    return dict(likelihood=ctx.likelihood, variance=ctx.variance)


@register_producer("grad")
@dataclasses.dataclass(frozen=True)
class InputGradient:
    """:func:`input_gradient_maps` of one ``term``; named ``grad_<term>``.

    Raises:
      ConfigError: ``term`` is not one of :data:`TERMS` (``eval.maps``).
    """

    map_names: ClassVar[tuple[str, ...]] = tuple(f"grad_{t}" for t in TERMS)
    term: str
    settings: GradientSettings = GradientSettings()

    def __post_init__(self) -> None:
        check_entry(validation.one_of, "eval.maps", f"grad_{self.term}", self.map_names)

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[InputGradient]:
        """One per ``grad_<term>`` in ``eval.maps``, with :meth:`GradientSettings.from_config`.

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          The producers, in ``eval.maps`` order.
        """
        settings = GradientSettings.from_config(eval_config)
        names = [n for n in eval_maps(eval_config) if n in cls.map_names]
        return [cls(n.removeprefix("grad_"), settings) for n in names]

    @property
    def name(self) -> str:
        """``grad_<term>``."""
        return f"grad_{self.term}"

    @property
    def map_name(self) -> str:
        """The ``eval.maps`` entry that selects this producer."""
        return self.name

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`input_gradient_maps` of ``ctx.test_images`` with the model's training loss.

        Args:
          ctx: the shared context (model, test set, key, likelihood, variance, beta).

        Returns:
          ``(N, H, W)`` float32.
        """
        encode_fn, decode_fn = model_fns(ctx.model, ctx.variables)
        s = self.settings
        return input_gradient_maps(
            encode_fn,
            decode_fn,
            ctx.test_images,
            key=jax.random.fold_in(ctx.key, 1),
            batch_size=ctx.batch_size,
            term=self.term,
            beta=ctx.beta,
            num_samples=s.num_samples,
            channel_reduce=s.channel_reduce,
            smooth_kernel=s.smooth_kernel,
            smooth_sigma=s.smooth_sigma,
            **_likelihood_kwargs(ctx),
        )


NORMALIZE_ON = ("test", "train")


def _range_on(ctx: Context, producer: Any, normalize_on: str, max_images: int):
    """``(lo, hi)`` of a producer's maps over the test set or the first training images."""
    if normalize_on == "test":
        return set_range(ctx.map_of(producer))
    train = _check_images(ctx.train_images, "training images")[:max_images]
    sub = dataclasses.replace(ctx, test_images=train, masks=None, labels=None, groups=None)
    sub._produced, sub._seconds, sub._borrowed = {}, {}, [0.0]
    return set_range(producer.produce(sub))


@register_producer("combination")
@dataclasses.dataclass(frozen=True)
class GradientCombination:
    """Zimmerer et al.'s combinations of the KL-gradient map with the reconstruction error.

    ``mode="product"`` -> ``combi`` (:func:`product_combination`), ``"sum"`` ->
    ``combi_add`` (:func:`additive_combination`). Ranges over the whole test set
    (``normalize_on="test"``, as in their code) or fixed on up to ``max_norm_images``
    training images (``"train"``: no statistic of the test set is used).

    Raises:
      ConfigError: an unknown ``mode`` (``eval.maps``), or a bad ``normalize_on`` or
        ``max_norm_images`` (``eval.combi.<key>``).
    """

    # the eval.maps name of each mode
    MODES: ClassVar[dict[str, str]] = {"combi": "product", "combi_add": "sum"}
    map_names: ClassVar[tuple[str, ...]] = tuple(MODES)
    mode: str
    settings: GradientSettings = GradientSettings()
    normalize_on: str = "test"
    max_norm_images: int = 256

    def __post_init__(self) -> None:
        if self.mode not in self.MODES.values():
            raise validation.ConfigError(
                "eval.maps",
                f"combination mode must be one of {list(self.MODES.values())} "
                f"(maps {list(self.MODES)}); got {self.mode!r}",
            )
        check_entry(validation.one_of, "eval.combi.normalize_on", self.normalize_on, NORMALIZE_ON)
        value = _check_integer("eval.combi.max_norm_images", self.max_norm_images, 1)
        object.__setattr__(self, "max_norm_images", value)

    @classmethod
    def from_config(
        cls, eval_config: Mapping[str, Any], **context: Any
    ) -> list[GradientCombination]:
        """One per ``combi``/``combi_add`` in ``eval.maps``, with ``eval.grad`` and
        ``eval.combi`` (:data:`COMBI_DEFAULTS`).

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          The producers, in ``eval.maps`` order.
        """
        settings = GradientSettings.from_config(eval_config)
        block = _block(eval_config, "combi", COMBI_DEFAULTS)
        names = [n for n in eval_maps(eval_config) if n in cls.map_names]
        return [cls(cls.MODES[n], settings, **block) for n in names]

    @property
    def name(self) -> str:
        """``combi`` (product) or ``combi_add`` (sum)."""
        return "combi" if self.mode == "product" else "combi_add"

    @property
    def map_name(self) -> str:
        """The ``eval.maps`` entry that selects this producer."""
        return self.name

    def produce(self, ctx: Context) -> np.ndarray:
        """The combination of the KL-gradient map and ``recon``, both reused from ``ctx``.

        Args:
          ctx: the shared context.

        Returns:
          ``(N, H, W)`` float32.
        """
        kl_producer, rec_producer = InputGradient("kl", self.settings), ReconstructionError()
        kl, rec = ctx.map_of(kl_producer), ctx.map_of(rec_producer)
        kl_range = _range_on(ctx, kl_producer, self.normalize_on, self.max_norm_images)
        if self.mode == "product":
            return product_combination(kl, rec, weight_range=kl_range)
        rec_range = _range_on(ctx, rec_producer, self.normalize_on, self.max_norm_images)
        return additive_combination(kl, rec, a_range=kl_range, b_range=rec_range)


@register_producer("projection")
@dataclasses.dataclass(frozen=True)
class EnergyProjection:
    """:func:`projection_maps` (Dehaene et al.); named ``projection``.

    Attributes:
      steps: iterations of :func:`projection_step`.
      step_size: the step.
      lam: weight of the L1 distance to the test image.
      kl_weight: weight of the KL term in the energy.
      threshold: freeze an image once its energy is at most this; 0 or below means no early
        stop (run all ``steps``).
      clip: clip to [0, 1] after each step.
      channel_reduce: ``"sum"``, ``"mean"`` or ``"max"`` for :func:`projection_map`.

    Raises:
      ConfigError: naming the ``eval.projection.<key>`` that is out of range.
    """

    name: ClassVar[str] = "projection"
    map_name: ClassVar[str] = "projection"
    map_names: ClassVar[tuple[str, ...]] = ("projection",)
    steps: int = 100
    step_size: float = 0.05
    lam: float = 1.0
    kl_weight: float = 0.0
    threshold: float = 0.0
    clip: bool = True
    channel_reduce: str = "sum"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", _check_integer("eval.projection.steps", self.steps, 1))
        check_entry(validation.positive, "eval.projection.step_size", self.step_size)
        for key in ("lam", "kl_weight"):
            _check_finite(f"eval.projection.{key}", getattr(self, key), minimum=0)
        _check_finite("eval.projection.threshold", self.threshold)
        check_entry(
            validation.one_of,
            "eval.projection.channel_reduce",
            self.channel_reduce,
            CHANNEL_REDUCTIONS,
        )

    @classmethod
    def from_config(cls, eval_config: Mapping[str, Any], **context: Any) -> list[EnergyProjection]:
        """One if ``eval.maps`` names ``projection``, with ``eval.projection``
        (:data:`PROJECTION_DEFAULTS`; its keys are checked either way).

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          The producer, or none.
        """
        block = _block(eval_config, "projection", PROJECTION_DEFAULTS)
        return [cls(**block)] if cls.map_name in eval_maps(eval_config) else []

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`projection_maps` of ``ctx.test_images`` with the model's training likelihood.

        Args:
          ctx: the shared context.

        Returns:
          ``(N, H, W)`` float32.
        """
        encode_fn, decode_fn = model_fns(ctx.model, ctx.variables)
        return projection_maps(
            encode_fn,
            decode_fn,
            ctx.test_images,
            batch_size=ctx.batch_size,
            channel_reduce=self.channel_reduce,
            steps=self.steps,
            step_size=self.step_size,
            lam=self.lam,
            kl_weight=self.kl_weight,
            threshold=self.threshold if self.threshold > 0 else None,
            clip=self.clip,
            **_likelihood_kwargs(ctx),
        )


@register_producer("released_attention")
@dataclasses.dataclass(frozen=True)
class ReleasedAttention:
    """:func:`released_attention_maps` at ``layer``; named ``attention_released_<layer>``.

    Not selected by ``config.eval`` on its own: :class:`AttentionWeightedRecon` builds it for
    its ``"released"`` variant.
    """

    layer: str

    @property
    def name(self) -> str:
        """``attention_released_<layer>``."""
        return f"attention_released_{self.layer}"

    def produce(self, ctx: Context) -> np.ndarray:
        """:func:`released_attention_maps` of ``ctx.test_images``.

        Args:
          ctx: the shared context.

        Returns:
          ``(N, H, W)`` float32.
        """
        return released_attention_maps(
            ctx.model, ctx.variables, ctx.test_images, layer=self.layer, batch_size=ctx.batch_size
        )


ATTENTION_VARIANTS = (*ANOMALY_CRITERIA, "released")


@register_producer("attention_x_recon")
@dataclasses.dataclass(frozen=True)
class AttentionWeightedRecon:
    """Anomaly attention as a spatial weight on the reconstruction error.

    ``variant`` ``"difference"`` (Eq. 4 + Eq. 5) or ``"kl"`` (per-latent KL score) at
    ``reference`` and ``layer`` (:class:`~vae_xai.localization.maps.AnomalyAttention`), or
    ``"released"`` (:class:`ReleasedAttention`); the attention map, normalized over the whole
    test set, times the reconstruction error (:func:`product_combination`). Named
    ``recon_x_<attention map name>``. The attention and reconstruction maps are reused when
    they were already produced in this evaluation (their cost is still counted).

    Raises:
      ConfigError: an unknown ``variant`` (``eval.attention_x_recon.variants``) or
        ``reference`` (``eval.references``), or ``num_samples`` not an integer >= 1
        (``eval.num_samples``).
    """

    map_name: ClassVar[str] = "attention_x_recon"
    map_names: ClassVar[tuple[str, ...]] = ("attention_x_recon",)
    variant: str
    layer: str
    reference: str = "empirical"
    sample: bool = True
    num_samples: int = 1

    def __post_init__(self) -> None:
        check_entry(
            validation.one_of, "eval.attention_x_recon.variants", self.variant, ATTENTION_VARIANTS
        )
        check_entry(validation.one_of, "eval.references", self.reference, REFERENCES)
        value = _check_integer("eval.num_samples", self.num_samples, 1)
        object.__setattr__(self, "num_samples", value)

    @classmethod
    def from_config(
        cls, eval_config: Mapping[str, Any], **context: Any
    ) -> list[AttentionWeightedRecon]:
        """If ``eval.maps`` names ``attention_x_recon``: one per
        ``eval.attention_x_recon.variants`` x ``eval.references`` (the ``"released"`` variant
        has no reference: one) x layers (``eval.attention_x_recon.layers``, default
        ``eval.layers``), with ``eval.sample``/``eval.num_samples``.

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          The producers (variants slowest, layers fastest), or none.

        Raises:
          ConfigError: an unknown key of ``eval.attention_x_recon`` (always checked), an
            unknown variant, or no layers at all (``eval.attention_x_recon.layers``).
        """
        block = _block(eval_config, "attention_x_recon", ATTENTION_X_RECON_DEFAULTS)
        if cls.map_name not in eval_maps(eval_config):
            return []
        field = "eval.attention_x_recon"
        variants = eval_names(block, "variants", (), ATTENTION_VARIANTS, field=f"{field}.variants")
        layers = eval_names(block, "layers", (), field=f"{field}.layers")
        layers = layers or eval_layers(eval_config)
        if not layers:
            raise validation.ConfigError(f"{field}.layers", "no layers (and eval.layers is empty)")
        references = eval_references(eval_config)
        sampling = eval_sampling(eval_config)
        return [
            cls(v, layer, reference=r, **sampling)
            for v in variants
            for r in (references if v != "released" else references[:1])
            for layer in layers
        ]

    def attention(self) -> Any:
        """The producer of the attention map used as the weight.

        Returns:
          A :class:`ReleasedAttention` or :class:`~vae_xai.localization.maps.AnomalyAttention`.
        """
        if self.variant == "released":
            return ReleasedAttention(self.layer)
        return AnomalyAttention(
            self.variant,
            self.reference,
            self.layer,
            sample=self.sample,
            num_samples=self.num_samples,
        )

    @property
    def name(self) -> str:
        """``recon_x_<attention map name>``."""
        return f"recon_x_{self.attention().name}"

    def produce(self, ctx: Context) -> np.ndarray:
        """The set-normalized attention map times ``recon``, both reused from ``ctx``.

        Args:
          ctx: the shared context.

        Returns:
          ``(N, H, W)`` float32.
        """
        weight = ctx.map_of(self.attention())
        return product_combination(weight, ctx.map_of(ReconstructionError()))


# ----------------------------------------------------------------------------- residuals

RESIDUALS = ("l2", "ssim")


def reconstruction_residual(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    x: ArrayLike,
    *,
    residual: str = "l2",
    decoder_output: DecoderOutput = "logits",
    channel_reduce: ChannelReduce = "sum",
    ssim_window: int = 11,
    ssim_sigma: float = 1.5,
    smooth_kernel: int = 0,
    smooth_sigma: float = 3.0,
) -> jax.Array:
    """The residual between images and their reconstructions at ``z = mu``, per pixel.

    ``residual="l2"``: the squared error ``(x - f(x))^2`` reduced over channels (with the
    defaults, the ``recon`` map of :func:`~vae_xai.localization.maps.reconstruction_error_maps`).
    ``residual="ssim"``: ``1 - SSIM(x, f(x))`` (:func:`vae_xai.localization.ssim.ssim_residual`,
    channels averaged), the residual of Bergmann et al.'s AE-SSIM (VISAPP 2019). Ours is that
    residual on a VAE trained with its own likelihood, not on an autoencoder trained with the
    SSIM loss as theirs was. Then optionally :func:`smooth_maps` (Zimmerer et al.'s kernel).

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      x: ``(B, H, W, C)`` in [0, 1].
      residual: ``"l2"`` or ``"ssim"``.
      decoder_output: ``"logits"`` or ``"mean"`` (module doc).
      channel_reduce: ``"sum"``, ``"mean"`` or ``"max"`` over channels (``"l2"`` only; SSIM
        averages its per-channel maps).
      ssim_window, ssim_sigma: the SSIM Gaussian window's side (odd) and sigma.
      smooth_kernel, smooth_sigma: Gaussian smoothing after the residual (0 = none).

    Returns:
      ``(B, H, W)``.

    Raises:
      ValueError: an unknown ``residual``/``channel_reduce``/``decoder_output``, or a bad SSIM
        window.
    """
    _check_choice("residual", residual, RESIDUALS)
    x = jnp.asarray(x)
    mu, _ = encode_fn(x)
    recon = image_mean(decode_fn(mu), decoder_output=decoder_output)
    if residual == "l2":
        maps = _reduce_channels(jnp.square(x - recon), channel_reduce)
    else:
        maps = ssim_residual(x, recon, window=ssim_window, sigma=ssim_sigma)
    return smooth_maps(maps, kernel_size=smooth_kernel, sigma=smooth_sigma)


def residual_maps(
    encode_fn: EncodeFn,
    decode_fn: DecodeFn,
    images: ArrayLike,
    *,
    batch_size: int = 16,
    **kwargs: Any,
) -> np.ndarray:
    """:func:`reconstruction_residual` over a test set, in padded batches (one compile).

    Args:
      encode_fn: the VAE's encoder (module doc).
      decode_fn: its decoder.
      images: ``(N, H, W, C)`` in [0, 1].
      batch_size: images per pass.
      **kwargs: those of :func:`reconstruction_residual`.

    Returns:
      ``(N, H, W)`` float32.
    """
    images = _check_images(images)
    return _over_set(
        lambda x, k: reconstruction_residual(encode_fn, decode_fn, x, **kwargs),
        images,
        jax.random.key(0),
        batch_size,
    ).astype(np.float32)


@register_producer("residual")
@dataclasses.dataclass(frozen=True)
class ReconstructionResidual:
    """The smoothed squared error and the SSIM residual (:func:`residual_maps`).

    ``map_name`` ``"recon_smooth"`` (the ``recon`` map smoothed), ``"ssim"`` (``1 - SSIM``
    between the image and its reconstruction) or ``"ssim_smooth"`` (that, smoothed); the
    smoothing is Zimmerer et al.'s Gaussian kernel (:func:`smooth_maps`), applied to the
    unsmoothed map kept in the evaluation's context (made once if both are evaluated).

    Attributes:
      map_name: the ``eval.maps`` entry, also the map's name.
      smooth_kernel: the smoothing kernel side of the ``*_smooth`` maps (8 becomes 7).
      smooth_sigma: its standard deviation.
      ssim_window: the SSIM window side (odd; 11 as Wang et al. and scikit-image).
      ssim_sigma: the SSIM window's standard deviation (1.5).

    Raises:
      ConfigError: naming the ``eval.residual.<key>`` that is out of range, or an unknown
        ``map_name`` (``eval.maps``).
    """

    map_names: ClassVar[tuple[str, ...]] = ("recon_smooth", "ssim", "ssim_smooth")
    map_name: str
    smooth_kernel: int = 8
    smooth_sigma: float = 3.0
    ssim_window: int = 11
    ssim_sigma: float = 1.5

    def __post_init__(self) -> None:
        check_entry(validation.one_of, "eval.maps", self.map_name, self.map_names)
        value = _check_integer("eval.residual.smooth_kernel", self.smooth_kernel, 3)
        object.__setattr__(self, "smooth_kernel", value)
        window = _check_integer("eval.residual.ssim_window", self.ssim_window, 1)
        if window % 2 == 0:
            raise validation.ConfigError(
                "eval.residual.ssim_window", f"must be odd (a centred window); got {window}"
            )
        object.__setattr__(self, "ssim_window", window)
        for key in ("smooth_sigma", "ssim_sigma"):
            check_entry(validation.positive, f"eval.residual.{key}", getattr(self, key))

    @classmethod
    def from_config(
        cls, eval_config: Mapping[str, Any], **context: Any
    ) -> list[ReconstructionResidual]:
        """One per ``recon_smooth``/``ssim``/``ssim_smooth`` in ``eval.maps``, with
        ``eval.residual`` (:data:`RESIDUAL_DEFAULTS`; checked whether or not a map uses it).

        Args:
          eval_config: the ``config.eval`` mapping.
          **context: unused.

        Returns:
          The producers, in ``eval.maps`` order.
        """
        block = _block(eval_config, "residual", RESIDUAL_DEFAULTS)
        cls(cls.map_names[0], **block)  # checks the block even when no map uses it
        names = [n for n in eval_maps(eval_config) if n in cls.map_names]
        return [cls(n, **block) for n in names]

    @property
    def name(self) -> str:
        """The map's name: its ``eval.maps`` entry."""
        return self.map_name

    def unsmoothed(self) -> Any:
        """The producer of the map a ``*_smooth`` map smooths: ``recon``
        (:class:`~vae_xai.localization.maps.ReconstructionError`) or ``ssim``.

        Returns:
          The producer.
        """
        if self.map_name == "recon_smooth":
            return ReconstructionError()
        return dataclasses.replace(self, map_name="ssim")

    def produce(self, ctx: Context) -> np.ndarray:
        """``ssim``: :func:`residual_maps` of ``ctx.test_images``; a ``*_smooth`` map: the
        :meth:`unsmoothed` map, reused from ``ctx`` (its cost still counted), smoothed.

        Args:
          ctx: the shared context.

        Returns:
          ``(N, H, W)`` float32.
        """
        if self.map_name == "ssim":
            encode_fn, decode_fn = model_fns(ctx.model, ctx.variables)
            return residual_maps(
                encode_fn,
                decode_fn,
                ctx.test_images,
                batch_size=ctx.batch_size,
                residual="ssim",
                ssim_window=self.ssim_window,
                ssim_sigma=self.ssim_sigma,
            )
        maps = ctx.map_of(self.unsmoothed())
        smoothed = smooth_maps(maps, kernel_size=self.smooth_kernel, sigma=self.smooth_sigma)
        return np.asarray(smoothed, np.float32)


# ----------------------------------------------------------------------------- config

# The names ``config.eval.maps`` may hold (of the classes registered above), and the defaults
# of the config blocks that parametrize them: the producers' own dataclass defaults.
MAP_NAMES = tuple(map_producers())
GRAD_DEFAULTS = _defaults(GradientSettings)
COMBI_DEFAULTS = _defaults(GradientCombination, "normalize_on", "max_norm_images")
PROJECTION_DEFAULTS = _defaults(EnergyProjection)
ATTENTION_X_RECON_DEFAULTS = dict(variants=("difference", "kl", "released"), layers=None)
RESIDUAL_DEFAULTS = _defaults(ReconstructionResidual)
# eval keys read here (one_class.EVAL_KEYS includes them)
EVAL_KEYS = ("maps", "grad", "combi", "projection", "attention_x_recon", "residual")


def producers_from_config(eval_config: Mapping[str, Any]) -> list[Any]:
    """The producers of this module that ``config.eval.maps`` names, in that order.

    ``eval.maps`` (default ``()``: none) names entries of :func:`map_producers` (at import:
    :data:`MAP_NAMES`); each registered class with ``map_names`` builds its own from
    ``config.eval`` (``from_config``):

    * ``grad_elbo``, ``grad_kl``, ``grad_rec`` -- :class:`InputGradient`, with ``eval.grad``
      (defaults :data:`GRAD_DEFAULTS`: ``z = mu``, channels summed, Zimmerer's smoothing,
      kernel 8 -> 7 and sigma 3; ``smooth_kernel=0`` for none);
    * ``combi``, ``combi_add`` -- :class:`GradientCombination` (the KL gradient with
      ``eval.grad``), with ``eval.combi`` (:data:`COMBI_DEFAULTS`);
    * ``projection`` -- :class:`EnergyProjection` with ``eval.projection``
      (:data:`PROJECTION_DEFAULTS`);
    * ``attention_x_recon`` -- :class:`AttentionWeightedRecon` for each of
      ``eval.attention_x_recon.variants`` x ``eval.references`` (the ``"released"`` variant
      has no reference: one each) x layers (``eval.attention_x_recon.layers``, default
      ``eval.layers``), with ``eval.sample``/``eval.num_samples``;
    * ``recon_smooth``, ``ssim``, ``ssim_smooth`` -- :class:`ReconstructionResidual` with
      ``eval.residual`` (:data:`RESIDUAL_DEFAULTS`: Zimmerer's smoothing kernel 8 -> 7,
      sigma 3; the SSIM window 11, sigma 1.5).

    Every class reads its blocks whether or not ``eval.maps`` names it, so an unknown key in
    any of them (or a bad ``eval.grad``) fails either way.

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The producers, grouped by their ``eval.maps`` entry in its order.

    Raises:
      ConfigError: a bad name or entry, naming the field.
    """
    e = dict(eval_config)
    position = {name: i for i, name in enumerate(eval_maps(e))}
    built = [p for cls in dict.fromkeys(map_producers().values()) for p in cls.from_config(e)]
    return sorted(built, key=lambda p: position[p.map_name])


def producer_names(eval_config: Mapping[str, Any]) -> list[str]:
    """The names of :func:`producers_from_config` (the keys of their maps in results).

    Args:
      eval_config: the ``config.eval`` mapping.

    Returns:
      The names, in order.
    """
    return [p.name for p in producers_from_config(eval_config)]
