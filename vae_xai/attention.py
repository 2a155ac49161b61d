"""Gradient-based VAE attention (Liu et al., CVPR 2020, Sec. 3.2-3.3) as pure functions.

Notation: ``features`` ``A`` is the encoder's feature map at the chosen conv layer,
``(B, h, w, c)``; ``head_fn(A) -> (mu, logvar)`` is the rest of the encoder, each ``(B, D)``.
For latent dim ``i`` a score ``z_i`` (``mu_i``, the reparameterized sample, or any function of
``mu, logvar``) is differentiated with respect to ``A``; the Grad-CAM weights are
``alpha_ik = mean_{h,w} dz_i / dA_k`` and the map is ``M_i = ReLU(sum_k alpha_ik A_k)``.

All ``D`` maps come from a single ``jax.vjp`` of the head, vmapped over one-hot cotangents.
Because only the spatial *mean* of the gradient is needed, the vjp is taken with respect to a
spatially constant shift ``delta`` of ``A`` (``(B, c)``): ``d z_i / d delta_k`` equals
``sum_{h,w} dz_i / dA_hwk`` exactly, for any head. A model whose first layer after ``A`` is
``Dense(flatten(A))`` can apply the shift on the Dense kernel summed over ``h, w`` instead, so the
backward pass never touches the ``(D, B, h, w, c)`` gradient tensor (see
:func:`vae_xai.encoder_split.split_encoder`, ``dense_after=``); that is what makes all ``D`` maps
cost about as much as one ordinary backward pass (measured in RESULTS.md, section "Attention
cost: all D per-latent maps vs one backward pass").

Every function here is jit-able and vmap-able; use ``latent_chunk`` to bound memory for large
``D`` with the generic (non-Dense) path.

Bad input: shapes, dtypes and the ``head_fn`` output are checked at trace time (free under
``jit``) and raise ``ValueError``/``TypeError`` naming the argument. Values (``ref_var > 0``,
finite ``ref_mu``, finite :func:`reference_statistics` input) are checked only when they are
concrete, i.e. outside ``jit``. A NaN or inf in an image's features, or in its
``(mu, logvar)``, makes *all* of that image's maps NaN (inside and outside ``jit``; other
images are unaffected), so a broken input never yields plausible-looking numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from vae_xai.losses import reparameterize

HeadFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
ShiftHeadFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
Score = Literal["mean", "sample"] | ScoreFn
Rectify = Literal["relu", "abs", "none"] | None

__all__ = [
    "aggregate_attention",
    "anomaly_attention",
    "gradcam_weights",
    "latent_attention",
    "latent_kl_score",
    "latent_scores",
    "normal_difference_score",
    "rectify_map",
    "reference_statistics",
    "released_code_attention",
    "upsample",
]


def _check_features(features: ArrayLike) -> jax.Array:
    features = jnp.asarray(features)
    if features.ndim != 4:
        raise ValueError(
            f"features must be a conv feature map of shape (B, h, w, c); got shape {features.shape}"
        )
    if 0 in features.shape:
        what = "0 images" if features.shape[0] == 0 else "an empty axis"
        raise ValueError(
            f"features has {what} (shape {features.shape}); expected (B, h, w, c) with "
            "B, h, w, c >= 1"
        )
    if not jnp.issubdtype(features.dtype, jnp.floating):
        raise TypeError(f"features must be floating point; got dtype {features.dtype}")
    return features


def _is_concrete(*xs: Any) -> bool:
    """True when no argument is being traced (values can be checked on the host)."""
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _head_outputs(out: Any, name: str) -> tuple[jax.Array, jax.Array]:
    """Check that ``name`` (``head_fn``/``shift_head_fn``) returned a float (mu, logvar) pair."""
    expected = f"{name} must return a (mu, logvar) pair of floating-point arrays, each (B, D)"
    if isinstance(out, Mapping):
        raise TypeError(
            f"{expected}; got a {type(out).__name__} with keys {sorted(map(str, out))}. Wrap it, "
            "e.g. lambda a: (lambda o: (o['mu'], o['logvar']))(head(a))"
        )
    if not isinstance(out, tuple | list) or len(out) != 2:
        if isinstance(out, tuple | list):
            got = f"a {type(out).__name__} of {len(out)} elements"
        elif isinstance(out, jax.Array | np.ndarray):
            got = f"a single array of shape {out.shape}"
        else:
            got = type(out).__name__
        raise TypeError(f"{expected}; got {got}")
    for arg, v in zip(("mu", "logvar"), out, strict=True):
        if not isinstance(v, jax.Array | np.ndarray):
            raise TypeError(f"{expected}; got {arg} of type {type(v).__name__}")
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(
                f"{expected}; got {arg} of dtype {v.dtype} (an integer {arg} has no gradient, "
                "so every map would be 0)"
            )
    return out[0], out[1]


def _nan_where_nonfinite(x: jax.Array, *sources: jax.Array) -> jax.Array:
    """``x`` (B, ...) with every entry of image ``b`` set to NaN where a source (B, ...) has a
    NaN/inf in row ``b``: a broken image must not get plausible numbers (a NaN pixel of ``A``
    otherwise only shows as a few NaN pixels, and a NaN ``mu`` as zero gradients)."""
    ok = jnp.ones(x.shape[0], bool)
    for src in sources:
        ok = ok & jnp.all(jnp.isfinite(src).reshape(src.shape[0], -1), axis=1)
    return jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.array(jnp.nan, x.dtype))


def _check_reference(ref_mu: ArrayLike, ref_var: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """``ref_mu``/``ref_var`` as arrays; concrete values must be finite and ``ref_var > 0``."""
    if _is_concrete(ref_mu):
        mu_np = np.asarray(ref_mu)
        if not np.all(np.isfinite(mu_np)):
            raise ValueError(f"ref_mu must be finite; got {mu_np.tolist()}")
    if _is_concrete(ref_var):
        var_np = np.asarray(ref_var)
        if var_np.size == 0 or not np.all(var_np > 0) or not np.all(np.isfinite(var_np)):
            raise ValueError(
                "ref_var must be > 0 and finite (the variances sigma_x^2 of the normal-data "
                f"reference; use reference_statistics or the prior's 1.0); got {var_np.tolist()}"
            )
    return jnp.asarray(ref_mu), jnp.asarray(ref_var)


def latent_scores(
    mu: jax.Array, logvar: jax.Array, *, score: Score = "mean", key: jax.Array | None = None
) -> jax.Array:
    """The per-latent quantity whose gradient defines the attention.

    Args:
      mu: posterior means, ``(B, D)``.
      logvar: posterior log-variances, ``(B, D)``.
      score: ``"mean"`` uses ``mu`` (deterministic); ``"sample"`` the reparameterized sample
        ``mu + eps * exp(logvar / 2)`` with ``eps ~ N(0, 1)`` (the paper's choice); a callable
        ``score(mu, logvar) -> (B, D)`` is used as is.
      key: PRNG key, required for ``score="sample"``.

    Returns:
      The scores ``z``, ``(B, D)``.

    Raises:
      ValueError: unknown ``score``, ``"sample"`` without ``key``, or a callable returning the
        wrong shape.
      TypeError: a callable that does not return an array.
    """
    if callable(score):
        out = score(mu, logvar)
        if not hasattr(out, "shape"):
            raise TypeError(f"score function must return a (B, D) array; got {type(out).__name__}")
        if out.shape != mu.shape:
            raise ValueError(f"score function returned shape {out.shape}; expected {mu.shape}")
        return out
    if score == "mean":
        return mu
    if score == "sample":
        if key is None:
            raise ValueError('score="sample" needs a PRNG key: pass key=jax.random.key(...)')
        return reparameterize(mu, logvar, key)
    raise ValueError(f'score must be "mean", "sample" or a callable; got {score!r}')


def rectify_map(maps: jax.Array, rectify: Rectify) -> jax.Array:
    """Apply the map rectifier.

    Args:
      maps: attention maps of any shape.
      rectify: ``"relu"`` (the paper), ``"abs"`` (the authors' released code) or
        ``"none"``/``None`` (signed maps).

    Returns:
      ``maps`` rectified, same shape.

    Raises:
      ValueError: unknown ``rectify``.
    """
    if rectify == "relu":
        return jax.nn.relu(maps)
    if rectify == "abs":
        return jnp.abs(maps)
    if rectify in ("none", None):
        return maps
    raise ValueError(f'rectify must be "relu", "abs" or "none"; got {rectify!r}')


def gradcam_weights(
    head_fn: HeadFn,
    features: ArrayLike,
    *,
    score: Score = "mean",
    key: jax.Array | None = None,
    latent_chunk: int | None = None,
    shift_head_fn: ShiftHeadFn | None = None,
) -> jax.Array:
    """Grad-CAM weights ``alpha[b, i, k] = mean_{h,w} d z_bi / d A_bhwk``.

    All ``D`` rows come from one ``jax.vjp`` with respect to a spatially constant shift of ``A``
    (see the module docstring). Images whose features or ``(mu, logvar)`` contain NaN/inf get
    all-NaN weights.

    Args:
      head_fn: ``A (B, h, w, c) -> (mu, logvar)``, each ``(B, D)``. Must act on each sample
        independently (e.g. BatchNorm in inference mode).
      features: the feature map ``A``, ``(B, h, w, c)``.
      score: see :func:`latent_scores`.
      key: PRNG key for ``score="sample"``.
      latent_chunk: if set, latent dims are processed ``latent_chunk`` at a time
        (``lax.map``), bounding peak memory by ``latent_chunk`` instead of ``D`` gradients.
      shift_head_fn: optional faster equivalent of ``delta -> head_fn(A + delta[:, None, None])``
        for ``delta`` of shape ``(B, c)`` (must be exact; see the module docstring).

    Returns:
      ``alpha``, ``(B, D, c)``.

    Raises:
      ValueError: bad ``features`` shape, a head output of the wrong shape, or a
        ``latent_chunk`` that is not a positive integer.
      TypeError: non-float ``features`` or a head that does not return a float
        ``(mu, logvar)`` pair.
    """
    features = _check_features(features)
    b, h, w, c = features.shape
    name = "head_fn" if shift_head_fn is None else "shift_head_fn"
    if shift_head_fn is None:

        def shift_head_fn(delta: jax.Array) -> tuple[jax.Array, jax.Array]:
            return head_fn(features + delta[:, None, None, :])

    def scores_of_shift(delta: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        mu, logvar = _head_outputs(shift_head_fn(delta), name)
        if mu.ndim != 2 or mu.shape[0] != b or logvar.shape != mu.shape:
            raise ValueError(
                f"{name} must return (mu, logvar) of shape (B={b}, D); got {mu.shape} and "
                f"{logvar.shape}"
            )
        return latent_scores(mu, logvar, score=score, key=key), (mu, logvar)

    delta0 = jnp.zeros((b, c), features.dtype)
    z, pullback, (mu, logvar) = jax.vjp(scores_of_shift, delta0, has_aux=True)
    d = z.shape[1]

    def one_latent(onehot: jax.Array) -> jax.Array:  # (D,) -> (B, c)
        (grad_sum,) = pullback(jnp.broadcast_to(onehot, z.shape).astype(z.dtype))
        return grad_sum

    if latent_chunk is not None and (
        isinstance(latent_chunk, bool) or not isinstance(latent_chunk, int) or latent_chunk < 1
    ):  # (2.5 would silently be 2)
        raise ValueError(f"latent_chunk must be a positive integer; got {latent_chunk!r}")
    eye = jnp.eye(d, dtype=z.dtype)
    if latent_chunk is None or latent_chunk >= d:
        sums = jax.vmap(one_latent)(eye)
    else:
        sums = jax.lax.map(one_latent, eye, batch_size=latent_chunk)
    alpha = jnp.transpose(sums, (1, 0, 2)) / (h * w)  # (B, D, c)
    return _nan_where_nonfinite(alpha, features, mu, logvar, z)


def latent_attention(
    head_fn: HeadFn,
    features: ArrayLike,
    *,
    score: Score = "mean",
    key: jax.Array | None = None,
    rectify: Rectify = "relu",
    latent_chunk: int | None = None,
    shift_head_fn: ShiftHeadFn | None = None,
) -> jax.Array:
    """One Grad-CAM map per latent dimension, at the feature map's resolution.

    ``M_bi = rectify(sum_k alpha_bik A_bk)`` with ``alpha`` from :func:`gradcam_weights`
    (paper Sec. 3.2; ``rectify="relu"`` is the paper's choice). Use :func:`upsample` to bring
    the maps to the input size and :func:`aggregate_attention` for the overall map (Eq. 4).
    An image whose features or ``(mu, logvar)`` contain NaN/inf gets all-NaN maps.

    Example::

        split = split_encoder(model, variables, x, layer="conv2", method="encode")
        maps = latent_attention(split.head_fn, split.features)          # (B, D, h, w)
        overall = upsample(aggregate_attention(maps), x.shape[1:3])    # (B, H, W)

    Args:
      head_fn: ``A -> (mu, logvar)``; see :func:`gradcam_weights`.
      features: the feature map ``A``, ``(B, h, w, c)``.
      score: see :func:`latent_scores`.
      key: PRNG key for ``score="sample"``.
      rectify: see :func:`rectify_map`.
      latent_chunk: see :func:`gradcam_weights`.
      shift_head_fn: see :func:`gradcam_weights`.

    Returns:
      The maps ``M``, ``(B, D, h, w)``.

    Raises:
      ValueError, TypeError: as :func:`gradcam_weights` and :func:`rectify_map`.
    """
    features = _check_features(features)
    alpha = gradcam_weights(
        head_fn,
        features,
        score=score,
        key=key,
        latent_chunk=latent_chunk,
        shift_head_fn=shift_head_fn,
    )
    maps = jnp.einsum("bdc,bhwc->bdhw", alpha, features)
    return rectify_map(maps, rectify)


def aggregate_attention(maps: ArrayLike) -> jax.Array:
    """Overall attention ``M = (1/D) sum_i M_i`` (paper Eq. 4).

    Args:
      maps: per-latent maps, ``(B, D, h, w)``.

    Returns:
      The overall map, ``(B, h, w)``.

    Raises:
      ValueError: ``maps`` is not 4-D.
    """
    maps = jnp.asarray(maps)
    if maps.ndim != 4:
        raise ValueError(f"maps must have shape (B, D, h, w); got {maps.shape}")
    return jnp.mean(maps, axis=1)


def upsample(maps: ArrayLike, size: tuple[int, int], *, method: str = "bilinear") -> jax.Array:
    """Resize the trailing two (spatial) axes of ``maps``.

    Bilinear by default, as Grad-CAM does.

    Args:
      maps: ``(..., h, w)``, e.g. ``(B, h, w)`` or ``(B, D, h, w)``.
      size: target ``(H, W)``.
      method: any ``jax.image.resize`` method.

    Returns:
      ``(..., H, W)``.

    Raises:
      ValueError: fewer than 2 axes, or ``size`` not of length 2.
    """
    maps = jnp.asarray(maps)
    if maps.ndim < 2:
        raise ValueError(f"maps must have at least 2 (spatial) axes; got shape {maps.shape}")
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be (H, W); got {size}")
    return jax.image.resize(maps, maps.shape[:-2] + size, method=method)


def normal_difference_score(
    ref_mu: ArrayLike, ref_var: ArrayLike, *, key: jax.Array | None, sample: bool = True
) -> ScoreFn:
    """Score function for anomaly attention (paper Sec. 3.3, Eq. 5).

    For a test image with posterior ``N(mu_y, sigma_y^2)`` and the normal-data reference
    ``N(mu_x, sigma_x^2)``, scores are drawn from the normal difference distribution
    ``N(mu_x - mu_y, sigma_x^2 + sigma_y^2)``: ``(mu_x - mu_y) + eps * sqrt(sigma_x^2 +
    sigma_y^2)``.

    Args:
      ref_mu: reference means ``mu_x``; broadcast against ``(B, D)`` (scalar or ``(D,)``).
      ref_var: reference variances ``sigma_x^2``, same broadcasting; must be > 0.
      key: PRNG key for the draw; required when ``sample=True``.
      sample: if False, use the mean ``mu_x - mu_y`` (deterministic).

    Returns:
      A ``score(mu, logvar) -> (B, D)`` for :func:`latent_scores`.

    Raises:
      ValueError: concrete ``ref_mu``/``ref_var`` not finite or ``ref_var <= 0``, or
        ``sample=True`` without ``key``.
    """
    ref_mu, ref_var = _check_reference(ref_mu, ref_var)
    if sample and key is None:
        raise ValueError("anomaly attention with sample=True needs a PRNG key")

    def score(mu: jax.Array, logvar: jax.Array) -> jax.Array:
        mean = ref_mu - mu
        if not sample:
            return mean
        eps = jax.random.normal(key, mu.shape, mu.dtype)
        return mean + eps * jnp.sqrt(ref_var + jnp.exp(logvar))

    return score


def latent_kl_score(ref_mu: ArrayLike, ref_var: ArrayLike) -> ScoreFn:
    """Per-latent KL divergence of the test posterior from the normal reference, as a score.

    ``KL_i = KL(N(mu_i, sigma_i^2) || N(mu_x_i, sigma_x_i^2))
    = 0.5 * (log sigma_x^2 - log sigma^2 + (sigma^2 + (mu - mu_x)^2) / sigma_x^2 - 1)``.

    Used as the score of :func:`anomaly_attention` with ``criterion="kl"`` (our extension, not
    in the paper). Its gradient is ``(mu_i - mu_x_i) / sigma_x_i^2 * dmu_i + ...``: each
    latent's map is weighted, with the right sign, by how far that latent has moved from the
    normal data, so latents that did not move contribute nothing and the map shows the
    evidence *for* the deviation. With Eq. 5's difference score the gradient is ``-dmu_i``
    whatever the deviation (the reference drops out of the map), and the ReLU keeps the
    regions that push ``mu_i`` down, which point away from the anomaly whenever ``mu_i`` went up.

    Args:
      ref_mu: reference means ``mu_x``, broadcast against ``(B, D)``.
      ref_var: reference variances ``sigma_x^2``, same broadcasting; must be > 0.

    Returns:
      A ``score(mu, logvar) -> (B, D)`` for :func:`latent_scores`.

    Raises:
      ValueError: concrete ``ref_mu``/``ref_var`` not finite or ``ref_var <= 0``.
    """
    ref_mu, ref_var = _check_reference(ref_mu, ref_var)

    def score(mu: jax.Array, logvar: jax.Array) -> jax.Array:
        var = jnp.exp(logvar)
        return 0.5 * (jnp.log(ref_var) - logvar + (var + jnp.square(mu - ref_mu)) / ref_var - 1.0)

    return score


AnomalyCriterion = Literal["difference", "kl"]


def anomaly_attention(
    head_fn: HeadFn,
    features: ArrayLike,
    *,
    key: jax.Array | None = None,
    ref_mu: ArrayLike = 0.0,
    ref_var: ArrayLike = 1.0,
    sample: bool = True,
    criterion: AnomalyCriterion = "difference",
    rectify: Rectify = "relu",
    latent_chunk: int | None = None,
    shift_head_fn: ShiftHeadFn | None = None,
) -> jax.Array:
    """Per-latent anomaly attention maps (paper Sec. 3.3).

    The reference statistics default to the N(0, 1) prior; pass the output of
    :func:`reference_statistics` on the (normal) training set to use empirical ones.

    Args:
      head_fn: ``A -> (mu, logvar)``; see :func:`gradcam_weights`.
      features: the feature map ``A``, ``(B, h, w, c)``.
      key: PRNG key for the ``"difference"`` draw with ``sample=True``.
      ref_mu: reference means ``mu_x`` (scalar or ``(D,)``).
      ref_var: reference variances ``sigma_x^2`` (scalar or ``(D,)``), > 0.
      sample: for ``"difference"``: draw from the normal difference distribution (the paper)
        rather than use its mean.
      criterion: the per-latent score that is differentiated: ``"difference"`` (default, the
        paper's Eq. 5, see :func:`normal_difference_score`) or ``"kl"`` (our extension, see
        :func:`latent_kl_score`; deterministic, ``sample``/``key`` are ignored).
      rectify: see :func:`rectify_map`.
      latent_chunk: see :func:`gradcam_weights`.
      shift_head_fn: see :func:`gradcam_weights`.

    Returns:
      The maps, ``(B, D, h, w)``.

    Raises:
      ValueError: unknown ``criterion``, bad concrete reference statistics, or as
        :func:`latent_attention`.
    """
    if criterion == "difference":
        score = normal_difference_score(ref_mu, ref_var, key=key, sample=sample)
    elif criterion == "kl":
        score = latent_kl_score(ref_mu, ref_var)
    else:
        raise ValueError(f'criterion must be "difference" or "kl"; got {criterion!r}')
    return latent_attention(
        head_fn,
        features,
        score=score,
        rectify=rectify,
        latent_chunk=latent_chunk,
        shift_head_fn=shift_head_fn,
    )


def reference_statistics(mu: ArrayLike, logvar: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Empirical latent statistics ``(mu_x, sigma_x^2)`` of normal data.

    ``mu_x`` is the mean of ``mu``; ``sigma_x^2`` is the variance of the aggregate posterior by
    the law of total variance, ``mean(exp(logvar)) + var(mu)``, i.e. the spread of ``z`` over
    normal data. For data too large for memory, combine per-batch sums (the formula is linear
    in the moments ``E[mu]``, ``E[mu^2]``, ``E[exp(logvar)]``).

    Args:
      mu: encoder means over the training set, ``(N, D)``.
      logvar: encoder log-variances, ``(N, D)``.

    Returns:
      ``(mu_x, sigma_x^2)``, each ``(D,)``.

    Raises:
      ValueError: ``N = 0``, wrong shapes, or (for concrete values, outside ``jit``) NaN/inf
        entries.
      TypeError: integer inputs.
    """
    concrete = _is_concrete(mu, logvar)
    mu = jnp.asarray(mu)
    logvar = jnp.asarray(logvar)
    if mu.ndim != 2 or mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must both be (N, D); got {mu.shape}, {logvar.shape}")
    if mu.shape[0] == 0:
        raise ValueError(
            f"mu and logvar have 0 rows (shape {mu.shape}); reference_statistics needs the "
            "encoder outputs (N, D) of at least one normal training image"
        )
    for arg, v in (("mu", mu), ("logvar", logvar)):
        if not jnp.issubdtype(v.dtype, jnp.floating):
            raise TypeError(f"{arg} must be floating point; got dtype {v.dtype}")
    if concrete and not bool(jnp.all(jnp.isfinite(mu)) & jnp.all(jnp.isfinite(logvar))):
        raise ValueError("mu/logvar contain NaN or inf")
    return jnp.mean(mu, 0), jnp.mean(jnp.exp(logvar), 0) + jnp.var(mu, 0)


def released_code_attention(
    head_fn: HeadFn,
    features: ArrayLike,
    *,
    output_size: tuple[int, int] | None = None,
    eps: float = 1e-12,
) -> jax.Array:
    """The attention variant of the authors' released (MNIST-only) code, for comparison.

    One backward pass of ``sum(mu)`` over all latents and the whole batch; the gradient is
    divided by its root-mean-square over the whole batch; ``alpha = mean_{h,w}`` of it; the map
    ``sum_k alpha_k A_k`` is upsampled to ``output_size`` (if given) and then ``abs`` is taken
    (not ReLU). The paper's per-latent form (:func:`latent_attention`) is the default elsewhere.
    An image whose features or ``mu`` contain NaN/inf gets an all-NaN map (the batch-wide RMS
    can then make other images' maps NaN too, as in the released code).

    Args:
      head_fn: ``A -> (mu, logvar)``; see :func:`gradcam_weights`.
      features: the feature map ``A``, ``(B, h, w, c)``.
      output_size: ``(H, W)`` to upsample to before ``abs``; ``None`` keeps ``(h, w)``.
      eps: added to the RMS to avoid division by zero.

    Returns:
      One map per image, ``(B, H, W)`` (or ``(B, h, w)``).
    """
    features = _check_features(features)
    b = features.shape[0]

    def total_mu(a: jax.Array) -> tuple[jax.Array, jax.Array]:
        mu, _ = _head_outputs(head_fn(a), "head_fn")
        if mu.ndim != 2 or mu.shape[0] != b:
            raise ValueError(f"head_fn must return mu of shape (B={b}, D); got {mu.shape}")
        return jnp.sum(mu), mu

    grads, mu = jax.grad(total_mu, has_aux=True)(features)
    grads = grads / (jnp.sqrt(jnp.mean(jnp.square(grads))) + eps)
    alpha = jnp.mean(grads, axis=(1, 2))  # (B, c)
    maps = _nan_where_nonfinite(jnp.einsum("bc,bhwc->bhw", alpha, features), features, mu)
    if output_size is not None:
        maps = upsample(maps, output_size)
    return jnp.abs(maps)
