"""Attention maps against an independent reference: ``jax.jacrev`` + Grad-CAM written out."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_xai import attention as att
from vae_xai.encoder_split import split_encoder
from vae_xai.models import ConvVAE

TOL = dict(rtol=1e-5, atol=1e-5)


def tiny_vae() -> ConvVAE:
    return ConvVAE(input_shape=(16, 16, 1), channels=(4, 6), hidden=12, latent_dim=5)


@pytest.fixture(scope="module")
def tiny():
    model = tiny_vae()
    x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 1))
    variables = model.init(jax.random.key(0), x)
    return model, variables, x


def reference_maps(head_fn, features, score_fn, rectify="relu"):
    """Grad-CAM from the full Jacobian: alpha = spatial mean of dz_i/dA, M = rect(sum alpha A)."""
    jac = jax.jacrev(lambda a: score_fn(*head_fn(a)))(features)  # (B, D, B, h, w, c)
    b = features.shape[0]
    per_sample = jnp.stack([jac[i, :, i] for i in range(b)])  # (B, D, h, w, c)
    alpha = per_sample.mean(axis=(2, 3))  # (B, D, c)
    maps = (alpha[:, :, None, None, :] * features[:, None]).sum(-1)
    return {"relu": jax.nn.relu, "abs": jnp.abs, "none": lambda m: m}[rectify](maps)


def mean_score(mu, logvar):
    return mu


@pytest.mark.parametrize("layer", ["conv1", "conv2", "encoder/conv2"])
def test_latent_attention_matches_jacrev(tiny, layer):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer=layer, method="encode")
    got = att.latent_attention(split.head_fn, split.features)
    want = reference_maps(split.head_fn, split.features, mean_score)
    assert got.shape == (3, 5) + split.features.shape[1:3]
    np.testing.assert_allclose(got, want, **TOL)
    assert float(jnp.max(got)) > 0  # non-trivial maps


def test_dense_fast_path_is_exact(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode", dense_after="fc1")
    assert split.shift_head_fn is not None
    fast = att.latent_attention(**split.attention_kwargs())
    want = reference_maps(split.head_fn, split.features, mean_score)
    np.testing.assert_allclose(fast, want, **TOL)


def test_dense_after_size_mismatch_is_reported(tiny):
    model, variables, x = tiny
    # fc1 consumes flatten(conv2), not flatten(conv1)
    split = split_encoder(model, variables, x, layer="conv1", method="encode", dense_after="fc1")
    with pytest.raises(ValueError, match="input size"):
        att.latent_attention(**split.attention_kwargs())


@pytest.mark.parametrize("rectify", ["relu", "abs", "none"])
def test_sample_score_and_rectifiers(tiny, rectify):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    key = jax.random.key(7)
    got = att.latent_attention(
        split.head_fn, split.features, score="sample", key=key, rectify=rectify
    )
    eps = jax.random.normal(key, (3, 5))
    want = reference_maps(
        split.head_fn, split.features, lambda mu, lv: mu + eps * jnp.exp(0.5 * lv), rectify
    )
    np.testing.assert_allclose(got, want, **TOL)


def test_custom_score_function(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    score = lambda mu, lv: jnp.tanh(mu) * lv  # noqa: E731
    got = att.latent_attention(split.head_fn, split.features, score=score, rectify="none")
    want = reference_maps(split.head_fn, split.features, score, "none")
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_chunked_equals_unchunked(tiny, chunk):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv1", method="encode")
    full = att.latent_attention(split.head_fn, split.features)
    chunked = att.latent_attention(split.head_fn, split.features, latent_chunk=chunk)
    np.testing.assert_allclose(chunked, full, **TOL)


def test_batch_of_one(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x[:1], layer="conv2", method="encode")
    got = att.latent_attention(split.head_fn, split.features)
    want = reference_maps(split.head_fn, split.features, mean_score)
    assert got.shape[0] == 1
    np.testing.assert_allclose(got, want, **TOL)


def test_jit_and_vmap_compose(tiny):
    model, variables, x = tiny

    def maps_for(images, key):
        split = split_encoder(model, variables, images, layer="conv2", method="encode")
        return att.latent_attention(
            split.head_fn, split.features, score="sample", key=key, shift_head_fn=None
        )

    keys = jax.random.split(jax.random.key(3), 2)
    eager = jnp.stack([maps_for(x, k) for k in keys])
    jitted = jax.jit(jax.vmap(maps_for, in_axes=(None, 0)))(x, keys)
    np.testing.assert_allclose(jitted, eager, **TOL)
    # vmap over an extra leading axis of images as well
    stacked = jnp.stack([x, x[::-1]])
    per = jax.jit(jax.vmap(lambda im: maps_for(im, keys[0])))(stacked)
    np.testing.assert_allclose(per[1], maps_for(x[::-1], keys[0]), **TOL)


class UserEncoder(nn.Module):
    """A user's encoder in its own style: tuple output, activations as functions, nested blocks."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(5, (3, 3), strides=(2, 2), name="stem")(x)
        x = nn.tanh(x)
        x = Block(name="block")(x)
        x = jnp.mean(x, axis=(1, 2)) + x.reshape(x.shape[0], -1)[:, :7].sum(-1, keepdims=True)
        h = nn.gelu(nn.Dense(9)(x))
        return nn.Dense(4, name="mu")(h), nn.Dense(4, name="logvar")(h) - 1.0


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(7, (3, 3), name="inner")(x)) * 1.5


@pytest.mark.parametrize("layer", ["stem", "block", "block/inner"])
def test_user_flax_encoder(layer):
    enc = UserEncoder()
    x = jax.random.normal(jax.random.key(2), (2, 12, 12, 3))
    variables = enc.init(jax.random.key(0), x)
    split = split_encoder(enc, variables, x, layer=layer)
    mu, logvar = split.outputs
    np.testing.assert_allclose(split.head_fn(split.features)[0], mu, **TOL)  # head reproduces
    got = att.latent_attention(split.head_fn, split.features, rectify="none")
    want = reference_maps(split.head_fn, split.features, mean_score, "none")
    np.testing.assert_allclose(got, want, **TOL)
    assert float(jnp.max(jnp.abs(got))) > 0


def test_split_errors(tiny):
    model, variables, x = tiny
    with pytest.raises(ValueError, match="was not called"):
        split_encoder(model, variables, x, layer="conv9", method="encode")
    with pytest.raises(ValueError, match="feature map"):
        split_encoder(model, variables, x, layer="fc1", method="encode")


def test_input_errors(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    with pytest.raises(ValueError, match=r"\(B, h, w, c\)"):
        att.latent_attention(split.head_fn, split.features[0])
    with pytest.raises(ValueError, match="PRNG key"):
        att.latent_attention(split.head_fn, split.features, score="sample")
    with pytest.raises(ValueError, match="rectify"):
        att.latent_attention(split.head_fn, split.features, rectify="sigmoid")
    with pytest.raises(ValueError, match="score"):
        att.latent_attention(split.head_fn, split.features, score="median")


def test_aggregate_and_upsample():
    maps = jax.random.uniform(jax.random.key(0), (2, 3, 4, 4))
    np.testing.assert_allclose(att.aggregate_attention(maps), maps.sum(1) / 3, **TOL)
    const = jnp.full((2, 3, 4, 4), 2.5)
    up = att.upsample(const, (16, 12))
    assert up.shape == (2, 3, 16, 12)
    np.testing.assert_allclose(up, 2.5, **TOL)
    # a single hot pixel spreads but keeps the location of its maximum
    hot = jnp.zeros((1, 4, 4)).at[0, 1, 2].set(1.0)
    up = att.upsample(hot, (8, 8))
    assert np.unravel_index(int(jnp.argmax(up[0])), (8, 8)) in {(2, 4), (2, 5), (3, 4), (3, 5)}


def test_normal_difference_distribution_moments():
    mu_y = jnp.array([[0.5, -1.0, 2.0]])
    logvar_y = jnp.log(jnp.array([[0.25, 1.0, 4.0]]))
    ref_mu = jnp.array([0.0, 1.0, -1.0])
    ref_var = jnp.array([1.0, 0.5, 2.0])
    keys = jax.random.split(jax.random.key(11), 20000)
    draw = jax.vmap(
        lambda k: att.normal_difference_score(ref_mu, ref_var, key=k)(mu_y, logvar_y)[0]
    )(keys)
    want_mean = np.array([-0.5, 2.0, -3.0])
    want_var = np.array([1.25, 1.5, 6.0])
    n = draw.shape[0]
    # mean within 5 standard errors; variance within 5 standard errors of a Gaussian variance
    assert np.all(np.abs(draw.mean(0) - want_mean) < 5 * np.sqrt(want_var / n))
    assert np.all(np.abs(draw.var(0) - want_var) < 5 * want_var * np.sqrt(2 / (n - 1)))
    det = att.normal_difference_score(ref_mu, ref_var, key=None, sample=False)(mu_y, logvar_y)
    np.testing.assert_allclose(det[0], want_mean, **TOL)


def test_anomaly_attention_matches_reference(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode", dense_after="fc1")
    key = jax.random.key(5)
    ref_mu, ref_var = jnp.linspace(-1, 1, 5), jnp.linspace(0.5, 2, 5)
    got = att.anomaly_attention(**split.attention_kwargs(), key=key, ref_mu=ref_mu, ref_var=ref_var)
    eps = jax.random.normal(key, (3, 5))
    want = reference_maps(
        split.head_fn,
        split.features,
        lambda mu, lv: (ref_mu - mu) + eps * jnp.sqrt(ref_var + jnp.exp(lv)),
    )
    np.testing.assert_allclose(got, want, **TOL)


def test_latent_kl_score_hand_computed():
    # KL(N(mu, s^2) || N(m, v)) = 0.5 * (log v - log s^2 + (s^2 + (mu - m)^2) / v - 1)
    mu = jnp.array([[0.0, 1.0, -2.0]])
    logvar = jnp.log(jnp.array([[1.0, 0.25, 4.0]]))
    ref_mu, ref_var = jnp.array([0.0, 0.0, 1.0]), jnp.array([1.0, 1.0, 2.0])
    got = att.latent_kl_score(ref_mu, ref_var)(mu, logvar)
    want = [
        0.0,  # identical distributions
        0.5 * (0.0 - np.log(0.25) + (0.25 + 1.0) - 1.0),
        0.5 * (np.log(2.0) - np.log(4.0) + (4.0 + 9.0) / 2.0 - 1.0),
    ]
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6)


def test_anomaly_attention_kl_criterion_matches_reference(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode", dense_after="fc1")
    ref_mu, ref_var = jnp.linspace(-1, 1, 5), jnp.linspace(0.5, 2, 5)

    def kl(mu, lv):
        return 0.5 * (jnp.log(ref_var) - lv + (jnp.exp(lv) + (mu - ref_mu) ** 2) / ref_var - 1)

    got = att.anomaly_attention(
        **split.attention_kwargs(), ref_mu=ref_mu, ref_var=ref_var, criterion="kl"
    )
    want = reference_maps(split.head_fn, split.features, kl)
    np.testing.assert_allclose(got, want, **TOL)
    assert float(jnp.max(got)) > 0
    # Unlike Eq. 5, the reference enters the map: moving ref_mu changes it.
    moved = att.anomaly_attention(
        **split.attention_kwargs(), ref_mu=ref_mu + 3.0, ref_var=ref_var, criterion="kl"
    )
    assert float(jnp.max(jnp.abs(moved - got))) > 1e-3
    with pytest.raises(ValueError, match="criterion"):
        att.anomaly_attention(**split.attention_kwargs(), criterion="mahalanobis")


def test_reference_statistics_law_of_total_variance():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(500, 3))
    logvar = rng.normal(size=(500, 3)) * 0.3
    m, v = att.reference_statistics(mu, logvar)
    np.testing.assert_allclose(m, mu.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v, np.exp(logvar).mean(0) + mu.var(0), rtol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        att.reference_statistics(np.full((2, 3), np.nan), np.zeros((2, 3)))


def test_released_code_variant(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    got = att.released_code_attention(split.head_fn, split.features, output_size=(16, 16))
    # reference: d(sum of all mu)/dA from the full Jacobian, RMS over the whole batch
    jac = jax.jacrev(lambda a: split.head_fn(a)[0])(split.features)  # (B, D, B, h, w, c)
    grads = jac.sum(axis=(0, 1))
    grads = grads / np.sqrt(np.mean(np.square(grads)))
    alpha = grads.mean(axis=(1, 2))
    maps = np.einsum("bc,bhwc->bhw", alpha, split.features)
    want = np.abs(np.asarray(jax.image.resize(maps, (3, 16, 16), "bilinear")))
    np.testing.assert_allclose(got, want, **TOL)


# ----------------------------------------------------------------------------- bad input


def _with_nan(features, value=jnp.nan):
    return features.at[1, 0, 0, 0].set(value)  # one pixel of image 1


ATTENTION_VARIANTS = {
    "generic": lambda s, f: att.latent_attention(s.head_fn, f),
    "dense_fast_path": lambda s, f: att.latent_attention(
        s.head_fn, f, shift_head_fn=s.shift_head_fn
    ),
    "chunked_abs": lambda s, f: att.latent_attention(s.head_fn, f, latent_chunk=2, rectify="abs"),
    "sample": lambda s, f: att.latent_attention(
        s.head_fn, f, score="sample", key=jax.random.key(0)
    ),
    "anomaly": lambda s, f: att.anomaly_attention(s.head_fn, f, key=jax.random.key(0)),
    "anomaly_kl": lambda s, f: att.anomaly_attention(s.head_fn, f, criterion="kl"),
}


NONFINITE_CASES = [
    pytest.param(variant, bad, id=f"{variant}-{name}")
    for variant in sorted(ATTENTION_VARIANTS)
    for name, bad in (("nan", np.nan), ("inf", np.inf))
    if not (variant == "dense_fast_path" and name == "inf")  # NaN in x: see below
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(("variant", "bad"), NONFINITE_CASES)
def test_nonfinite_features_give_nan_maps_for_that_image(tiny, variant, bad, jit):
    # Before: image 1 got finite maps (zeros) with a NaN at the one bad pixel.
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode", dense_after="fc1")
    want = ATTENTION_VARIANTS[variant](split, split.features)
    if variant == "dense_fast_path":
        # shift_head_fn reads the split's own features, so break image 1 at the input: a NaN
        # pixel of x reaches conv2 through conv1 and the ReLUs.
        split = split_encoder(
            model, variables, _with_nan(x), layer="conv2", method="encode", dense_after="fc1"
        )
        features = split.features
        assert not bool(jnp.isfinite(features[1]).all())
    else:
        features = _with_nan(split.features, bad)
    fn = ATTENTION_VARIANTS[variant]
    got = jax.jit(lambda f: fn(split, f))(features) if jit else fn(split, features)
    assert bool(jnp.isnan(got[1]).all())
    np.testing.assert_allclose(got[np.array([0, 2])], want[np.array([0, 2])], **TOL)
    assert bool(jnp.isfinite(got[np.array([0, 2])]).all())


def test_nonfinite_head_output_gives_nan_maps_for_that_image(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")

    def head_nan_logvar(a):  # finite features, but the head breaks for image 1
        mu, logvar = split.head_fn(a)
        return mu, logvar.at[1, 2].set(jnp.inf)

    got = att.latent_attention(head_nan_logvar, split.features)  # score = mu: finite z
    want = att.latent_attention(split.head_fn, split.features)
    assert bool(jnp.isnan(got[1]).all())
    np.testing.assert_allclose(got[np.array([0, 2])], want[np.array([0, 2])], **TOL)


def test_released_variant_nan_features(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    got = att.released_code_attention(split.head_fn, _with_nan(split.features))
    assert bool(jnp.isnan(got[1]).all())  # not a finite map with one NaN pixel


@pytest.mark.parametrize("criterion", ["difference", "kl"])
@pytest.mark.parametrize("ref_var", [0.0, -1.0, [1.0, 0.0, 1.0, 1.0, 1.0], np.nan])
def test_ref_var_must_be_positive(tiny, criterion, ref_var):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    with pytest.raises(ValueError, match=r"ref_var must be > 0"):
        att.anomaly_attention(
            split.head_fn,
            split.features,
            key=jax.random.key(0),
            ref_var=ref_var,
            criterion=criterion,
        )
    with pytest.raises(ValueError, match=r"ref_var must be > 0"):
        att.anomaly_attention(
            split.head_fn,
            split.features,
            key=jax.random.key(0),
            ref_var=jnp.asarray(ref_var),
            criterion=criterion,
        )


def test_ref_mu_must_be_finite(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    with pytest.raises(ValueError, match=r"ref_mu must be finite"):
        att.anomaly_attention(split.head_fn, split.features, ref_mu=np.nan, criterion="kl")


@pytest.mark.parametrize("criterion", ["difference", "kl"])
def test_traced_negative_ref_var_gives_nan_maps(tiny, criterion):
    # Under jit the value is unknown: no error, but never plausible numbers.
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    maps = jax.jit(
        lambda v: att.anomaly_attention(
            split.head_fn, split.features, key=jax.random.key(0), ref_var=v, criterion=criterion
        )
    )(jnp.full((5,), -100.0))
    assert bool(jnp.isnan(maps).all())


def test_reference_statistics_bad_input():
    # Before: 0 rows returned NaN statistics (with a RuntimeWarning).
    with pytest.raises(ValueError, match=r"mu and logvar have 0 rows \(shape \(0, 3\)\)"):
        att.reference_statistics(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(TypeError, match="mu must be floating point; got dtype int"):
        att.reference_statistics(np.ones((4, 3), np.int32), np.zeros((4, 3)))
    # Value checks only apply to concrete inputs: under jit it traces (before: a
    # TracerBoolConversionError) and matches the eager result.
    rng = np.random.default_rng(1)
    mu, logvar = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) * 0.2
    jitted = jax.jit(att.reference_statistics)(mu, logvar)
    for a, b in zip(jitted, att.reference_statistics(mu, logvar), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def _dict_head(split):
    return lambda a: dict(zip(("mu", "logvar"), split.head_fn(a), strict=True))


@pytest.mark.parametrize(
    ("make_head", "match"),
    [
        (_dict_head, r"got a dict with keys \['logvar', 'mu'\]"),
        (lambda s: lambda a: s.head_fn(a)[0], r"got a single array of shape \(3, 5\)"),
        (lambda s: lambda a: (*s.head_fn(a), s.head_fn(a)[0]), r"got a tuple of 3 elements"),
        (lambda s: lambda a: (s.head_fn(a)[0], None), r"got logvar of type NoneType"),
    ],
    ids=["dict", "array", "triple", "none"],
)
def test_head_fn_must_return_a_mu_logvar_pair(tiny, make_head, match):
    # Before (dict): AttributeError "'str' object has no attribute 'ndim'".
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    head = make_head(split)
    pattern = r"head_fn must return a \(mu, logvar\) pair of floating-point arrays.*" + match
    with pytest.raises(TypeError, match=pattern):
        att.latent_attention(head, split.features)
    with pytest.raises(TypeError, match=pattern):
        att.released_code_attention(head, split.features)
    with pytest.raises(TypeError, match=r"shift_head_fn must return .*" + match):
        att.latent_attention(
            head, split.features, shift_head_fn=lambda d: head(split.features + d[:, None, None])
        )


def test_score_function_must_return_an_array(tiny):
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    with pytest.raises(TypeError, match=r"score function must return a \(B, D\) array; got tuple"):
        att.latent_attention(split.head_fn, split.features, score=lambda mu, lv: (mu, lv))


def test_integer_mu_is_a_type_error(tiny):
    # Before: all-zero maps (an integer output has a zero gradient).
    model, variables, x = tiny
    split = split_encoder(model, variables, x, layer="conv2", method="encode")

    def int_head(a):
        mu, logvar = split.head_fn(a)
        return jnp.round(mu * 10).astype(jnp.int32), logvar

    with pytest.raises(TypeError, match=r"got mu of dtype int32 .*no gradient"):
        att.latent_attention(int_head, split.features)
    with pytest.raises(TypeError, match=r"got mu of dtype int32"):
        att.released_code_attention(int_head, split.features)


def test_empty_batch(tiny):
    # Before: ZeroDivisionError "integer modulo by zero" inside the model's reshape.
    model, variables, x = tiny
    with pytest.raises(
        ValueError, match=r"x must be a batch of at least one image.*\(0, 16, 16, 1\)"
    ):
        split_encoder(model, variables, x[:0], layer="conv2", method="encode")
    split = split_encoder(model, variables, x, layer="conv2", method="encode")
    with pytest.raises(ValueError, match=r"features has 0 images \(shape \(0, 4, 4, 6\)\)"):
        att.latent_attention(split.head_fn, split.features[:0])
    with pytest.raises(ValueError, match=r"features has 0 images"):
        att.released_code_attention(split.head_fn, split.features[:0])


class SharedConvEncoder(nn.Module):
    """Applies one conv twice (weight sharing): 'shared' has no single feature map."""

    @nn.compact
    def __call__(self, x):
        conv = nn.Conv(3, (3, 3), name="shared")
        h = nn.relu(conv(x))
        h = nn.relu(conv(h))
        h = h.reshape(h.shape[0], -1)
        return nn.Dense(2, name="mu")(h), nn.Dense(2, name="logvar")(h)


def test_layer_called_twice_is_refused():
    # Before: split at the first call, and head_fn replaced *both* calls with the features.
    enc = SharedConvEncoder()
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = enc.init(jax.random.key(1), x)
    with pytest.raises(ValueError, match=r"layer='shared' \('shared'\) is called 2 times"):
        split_encoder(enc, variables, x, layer="shared")
