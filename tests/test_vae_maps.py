"""VAE anomaly maps beyond the paper (vae_xai.localization.vae_maps) against independent
references: input gradients against ``jax.jacrev`` of the loss written out and finite
differences, combinations against NumPy, a projection step against a hand-written step, the
energy decreasing, Linen and NNX user models, producers built from config entries."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vae_xai import losses
from vae_xai.localization import maps as maps_lib
from vae_xai.localization import one_class
from vae_xai.localization import producers as producers_lib
from vae_xai.localization import vae_maps as vm
from vae_xai.models import ConvVAE
from vae_xai.validation import ConfigError

TOL = dict(rtol=2e-5, atol=2e-6)


@pytest.fixture(scope="module")
def tiny():
    """A 2-channel ConvVAE (so channel reduction matters) with its encode/decode functions."""
    model = ConvVAE(input_shape=(8, 8, 2), channels=(3,), hidden=6, latent_dim=3)
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 2))
    variables = model.init(jax.random.key(0), x)
    encode_fn, decode_fn = vm.model_fns(model, variables)
    return model, variables, x, encode_fn, decode_fn


def reference_losses(encode_fn, decode_fn, x, likelihood, variance):
    """Per-image (rec, kl) from vae_xai.losses (not from vae_maps)."""
    mu, logvar = encode_fn(x)
    rec = losses.reconstruction_nll(decode_fn(mu), x, likelihood=likelihood, variance=variance)
    return rec, losses.gaussian_kl(mu, logvar)


def per_image_grad(loss_fn, x):
    """d loss_b / d x_b from the full Jacobian (B, B, H, W, C); cross terms must vanish."""
    jac = jax.jacrev(loss_fn)(x)
    b = x.shape[0]
    diag = jnp.stack([jac[i, i] for i in range(b)])
    off = jac.sum(1) - diag
    np.testing.assert_allclose(off, 0.0, atol=1e-6)  # images are independent
    return diag


def smooth_numpy(maps, kernel):
    """Zero-padded 'same' 2-D correlation, written out."""
    k = kernel.shape[0]
    p = k // 2
    padded = np.pad(maps, ((0, 0), (p, p), (p, p)))
    out = np.zeros_like(maps)
    for i in range(maps.shape[1]):
        for j in range(maps.shape[2]):
            out[:, i, j] = (padded[:, i : i + k, j : j + k] * kernel).sum((1, 2))
    return out


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
@pytest.mark.parametrize("term", ["elbo", "kl", "rec"])
def test_input_gradients_match_jacrev(tiny, term, likelihood):
    _, _, x, encode_fn, decode_fn = tiny
    beta, variance = 0.7, 0.3

    def loss(xx):
        rec, kl = reference_losses(encode_fn, decode_fn, xx, likelihood, variance)
        return {"elbo": rec + beta * kl, "kl": kl, "rec": rec}[term]

    grad = per_image_grad(loss, x)
    got = jax.jit(
        lambda xx: vm.input_gradients(
            encode_fn,
            decode_fn,
            xx,
            term=term,
            likelihood=likelihood,
            variance=variance,
            beta=beta,
        )  # fmt: skip
    )(x)
    np.testing.assert_allclose(got, np.abs(grad).sum(-1), **TOL)
    assert float(got.max()) > 0
    for how, fn in (("mean", np.mean), ("max", np.max)):
        other = vm.input_gradients(
            encode_fn, decode_fn, x, term=term, likelihood=likelihood, variance=variance,
            beta=beta, channel_reduce=how,
        )  # fmt: skip
        np.testing.assert_allclose(other, fn(np.abs(grad), -1), **TOL)


def test_input_gradient_matches_finite_differences(tiny):
    _, _, x, encode_fn, decode_fn = tiny
    x64 = np.asarray(x, np.float64)

    def loss_of(img):  # image 1's ELBO, float32 model
        rec, kl = reference_losses(
            encode_fn, decode_fn, jnp.asarray(img, jnp.float32), "gaussian", 0.5
        )
        return float((rec + kl)[1])

    got = vm.input_gradients(encode_fn, decode_fn, x, term="elbo", channel_reduce="sum")
    eps = 1e-2
    for i, j in ((2, 3), (5, 1), (0, 7)):
        fd = []
        for c in range(2):
            plus, minus = x64.copy(), x64.copy()
            plus[1, i, j, c] += eps
            minus[1, i, j, c] -= eps
            fd.append((loss_of(plus) - loss_of(minus)) / (2 * eps))
        np.testing.assert_allclose(float(got[1, i, j]), np.abs(fd).sum(), rtol=2e-2, atol=2e-3)


def test_input_gradients_averaged_over_samples(tiny):
    _, _, x, encode_fn, decode_fn = tiny
    key = jax.random.key(7)

    def rec_mean(xx):
        mu, logvar = encode_fn(xx)
        recs = [
            losses.reconstruction_nll(
                decode_fn(losses.reparameterize(mu, logvar, k)), xx, likelihood="gaussian"
            )
            for k in jax.random.split(key, 4)
        ]
        return jnp.mean(jnp.stack(recs), 0)

    grad = per_image_grad(rec_mean, x)
    got = vm.input_gradients(encode_fn, decode_fn, x, term="rec", num_samples=4, key=key)
    np.testing.assert_allclose(got, np.abs(grad).sum(-1), **TOL)
    at_mu = vm.input_gradients(encode_fn, decode_fn, x, term="rec")
    assert not np.allclose(got, at_mu)
    with pytest.raises(ValueError, match="needs a key"):
        vm.input_gradients(encode_fn, decode_fn, x, term="rec", num_samples=2)


def test_smoothing_kernel_and_maps():
    k = vm.gaussian_kernel(8, 3.0)  # Zimmerer's default: 8 -> 7
    assert k.shape == (7, 7) and k.sum() == pytest.approx(1.0, abs=1e-6)
    r = np.arange(7) - 3
    want = np.exp(-(r[:, None] ** 2 + r[None] ** 2) / 18.0)
    np.testing.assert_allclose(k, want / want.sum(), rtol=1e-6)
    maps = np.random.default_rng(0).random((2, 9, 10)).astype(np.float32)
    got = vm.smooth_maps(maps, kernel_size=5, sigma=1.5)
    np.testing.assert_allclose(got, smooth_numpy(maps, vm.gaussian_kernel(5, 1.5)), **TOL)
    np.testing.assert_array_equal(vm.smooth_maps(maps, kernel_size=0), maps)
    with pytest.raises(ValueError, match="sigma"):
        vm.gaussian_kernel(5, 0.0)


def test_smoothed_gradient_maps_over_a_set_do_not_depend_on_batching(tiny):
    _, _, x, encode_fn, decode_fn = tiny
    images = np.concatenate([np.asarray(x), np.asarray(x[::-1])])  # 6 images
    kw = dict(term="kl", smooth_kernel=3, smooth_sigma=1.0)
    a = vm.input_gradient_maps(encode_fn, decode_fn, images, batch_size=4, **kw)
    b = vm.input_gradient_maps(encode_fn, decode_fn, images, batch_size=6, **kw)
    assert a.shape == (6, 8, 8) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, **TOL)
    raw = np.abs(
        per_image_grad(lambda xx: reference_losses(encode_fn, decode_fn, xx, "gaussian", 0.5)[1], x)
    ).sum(-1)
    np.testing.assert_allclose(a[:3], smooth_numpy(raw, vm.gaussian_kernel(3, 1.0)), **TOL)


# ----------------------------------------------------------------------------- combinations


def test_combinations_match_numpy_and_are_set_level():
    rng = np.random.default_rng(0)
    w = rng.random((4, 3, 5)).astype(np.float32) * 3 + 1
    r = rng.random((4, 3, 5)).astype(np.float32)
    wn = (w - w.min()) / (w.max() - w.min())
    rn = (r - r.min()) / (r.max() - r.min())
    np.testing.assert_allclose(vm.product_combination(w, r), wn * r, rtol=1e-6)
    np.testing.assert_allclose(vm.additive_combination(w, r), wn + rn, rtol=1e-6, atol=1e-7)
    # permuting the images permutes the maps (one range for the set)
    perm = [2, 0, 3, 1]
    np.testing.assert_allclose(vm.product_combination(w[perm], r[perm]), (wn * r)[perm], rtol=1e-6)
    # adding an image with a larger weight changes every image's map by the same affine map
    extra = np.full((1, 3, 5), 10.0, np.float32)
    more = vm.product_combination(np.concatenate([w, extra]), np.concatenate([r, r[:1]]))
    lo, hi = float(w.min()), 10.0
    np.testing.assert_allclose(more[:4], (w - lo) / (hi - lo) * r, rtol=1e-5)
    # per-image normalization would differ: the set-level maps keep image 0 vs 1's scale
    per_image = (w[0] - w[0].min()) / (w[0].max() - w[0].min()) * r[0]
    assert not np.allclose(vm.product_combination(w, r)[0], per_image)
    # a fixed range (e.g. from the training images) is used as given, nothing clipped
    fixed = vm.product_combination(w, r, weight_range=(2.0, 3.0))
    np.testing.assert_allclose(fixed, (w - 2.0) * r, rtol=1e-6)
    assert vm.set_range(w) == (float(w.min()), float(w.max()))
    np.testing.assert_array_equal(vm.normalize_by_range(w, lo=1.0, hi=1.0), 0.0)
    with pytest.raises(ValueError, match="both be"):
        vm.product_combination(w, r[:2])
    with pytest.raises(ValueError, match="finite"):
        vm.set_range(np.full((1, 2, 2), np.nan))


# ----------------------------------------------------------------------------- projection


def hand_written_step(encode_fn, decode_fn, x, x0, *, step_size, lam, kl_weight, likelihood):
    """x - a * dE/dx * (x - f(x))^2, E written from vae_xai.losses, d|.|/dx as np.sign."""
    variance = 0.5

    def smooth_part(xx):
        rec, kl = reference_losses(encode_fn, decode_fn, xx, likelihood, variance)
        return jnp.sum(rec + kl_weight * kl)

    grad = np.asarray(jax.grad(smooth_part)(x)) + lam * np.sign(np.asarray(x) - np.asarray(x0))
    recon = np.asarray(jax.nn.sigmoid(decode_fn(encode_fn(x)[0])))
    new = np.asarray(x) - step_size * grad * (np.asarray(x) - recon) ** 2
    return np.clip(new, 0.0, 1.0)


@pytest.mark.parametrize("likelihood,kl_weight", [("gaussian", 0.0), ("bernoulli", 0.5)])
def test_projection_steps_match_hand_written_steps(tiny, likelihood, kl_weight):
    _, _, x0, encode_fn, decode_fn = tiny
    kw = dict(step_size=0.2, lam=0.3, kl_weight=kl_weight, likelihood=likelihood)
    x1 = hand_written_step(encode_fn, decode_fn, x0, x0, **kw)
    x2 = hand_written_step(encode_fn, decode_fn, jnp.asarray(x1), x0, **kw)
    got, energies = jax.jit(lambda xx: vm.project(encode_fn, decode_fn, xx, steps=2, **kw))(x0)
    assert energies.shape == (3, 3)
    one, _ = vm.project(encode_fn, decode_fn, x0, steps=1, **kw)
    np.testing.assert_allclose(one, x1, **TOL)
    np.testing.assert_allclose(got, x2, rtol=1e-4, atol=1e-5)
    assert not np.allclose(x2, x0)
    # the energy recorded is E(x_t), written out
    rec, kl = reference_losses(encode_fn, decode_fn, jnp.asarray(x1), likelihood, 0.5)
    want = rec + 0.3 * np.abs(x1 - np.asarray(x0)).reshape(3, -1).sum(1) + kl_weight * kl
    np.testing.assert_allclose(energies[1], want, rtol=1e-5)


def test_energy_decreases_and_threshold_freezes_images(tiny):
    _, _, x0, encode_fn, decode_fn = tiny
    _, energies = vm.project(encode_fn, decode_fn, x0, steps=30, step_size=0.05, lam=0.1)
    e = np.asarray(energies)
    assert np.all(np.diff(e, axis=0) <= 1e-4 * np.abs(e[:-1]))
    assert np.all(e[-1] < e[0] - 1e-3)
    # a threshold between the images' starting energies freezes the low ones at x0
    start = e[0]
    threshold = float(np.sort(start)[1]) + 1e-3  # the two lowest are already below it
    x_t, e_t = vm.project(
        encode_fn, decode_fn, x0, steps=5, step_size=0.05, lam=0.1, threshold=threshold
    )
    frozen = start <= threshold
    assert frozen.sum() == 2
    np.testing.assert_array_equal(np.asarray(x_t)[frozen], np.asarray(x0)[frozen])
    assert not np.allclose(np.asarray(x_t)[~frozen], np.asarray(x0)[~frozen])
    maps = vm.projection_maps(
        encode_fn, decode_fn, x0, batch_size=2, steps=5, step_size=0.05, lam=0.1
    )
    want = np.abs(np.asarray(x0) - np.asarray(vm.project(
        encode_fn, decode_fn, x0, steps=5, step_size=0.05, lam=0.1)[0])).sum(-1)  # fmt: skip
    np.testing.assert_allclose(maps, want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- user models


class LinenEncoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.tanh(nn.Conv(3, (3, 3), strides=(2, 2))(x)).reshape(x.shape[0], -1)
        return nn.Dense(2)(h), nn.Dense(2)(h) - 1.0


class LinenDecoder(nn.Module):
    @nn.compact
    def __call__(self, z):
        return nn.Dense(6 * 6 * 1)(nn.gelu(nn.Dense(5)(z))).reshape(z.shape[0], 6, 6, 1)


class NNXVAE(nnx.Module):
    def __init__(self, *, rngs):
        self.conv = nnx.Conv(1, 3, (3, 3), strides=2, rngs=rngs)
        self.norm = nnx.BatchNorm(3, rngs=rngs)
        self.mu = nnx.Linear(27, 2, rngs=rngs)
        self.logvar = nnx.Linear(27, 2, rngs=rngs)
        self.dec = nnx.Linear(2, 36, rngs=rngs)

    def encode(self, x):
        h = nnx.relu(self.norm(self.conv(x))).reshape(x.shape[0], -1)
        return self.mu(h), self.logvar(h)

    def decode(self, z):  # the image mean itself
        return nnx.sigmoid(self.dec(z)).reshape(z.shape[0], 6, 6, 1)


def test_linen_user_model():
    x = jax.random.uniform(jax.random.key(3), (2, 6, 6, 1))
    enc, dec = LinenEncoder(), LinenDecoder()
    ev = enc.init(jax.random.key(0), x)
    dv = dec.init(jax.random.key(1), jnp.zeros((1, 2)))
    encode_fn = lambda xx: enc.apply(ev, xx)
    decode_fn = lambda z: dec.apply(dv, z)
    grad = per_image_grad(
        lambda xx: reference_losses(encode_fn, decode_fn, xx, "bernoulli", 0.5)[0], x
    )
    got = vm.input_gradient_maps(
        encode_fn, decode_fn, x, batch_size=2, term="rec", likelihood="bernoulli"
    )
    np.testing.assert_allclose(got, np.abs(grad).sum(-1), **TOL)
    maps = vm.projection_maps(encode_fn, decode_fn, x, batch_size=2, steps=3, step_size=0.5)
    assert maps.shape == (2, 6, 6) and maps.max() > 0


def test_nnx_user_model_decoding_the_mean():
    model = NNXVAE(rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.uniform(jax.random.key(4), (3, 6, 6, 1))
    encode_fn, decode_fn = model.encode, model.decode

    def rec_ref(xx):  # Bernoulli NLL of the mean, written out
        p = jnp.clip(decode_fn(encode_fn(xx)[0]), 1e-6, 1 - 1e-6)
        return -jnp.sum((xx * jnp.log(p) + (1 - xx) * jnp.log1p(-p)).reshape(3, -1), 1)

    grad = per_image_grad(rec_ref, x)
    got = vm.input_gradient_maps(
        encode_fn, decode_fn, x, batch_size=2, term="rec", likelihood="bernoulli",
        decoder_output="mean",
    )  # fmt: skip
    np.testing.assert_allclose(got, np.abs(grad).sum(-1), **TOL)
    x1, _ = vm.project(
        encode_fn, decode_fn, x, steps=1, step_size=0.3, lam=0.2, decoder_output="mean"
    )
    g = jax.grad(lambda xx: jnp.sum(0.5 * jnp.square(xx - decode_fn(encode_fn(xx)[0])) / 0.5))(x)
    want = np.clip(x - 0.3 * g * (x - decode_fn(encode_fn(x)[0])) ** 2, 0, 1)  # sign(0) = 0
    np.testing.assert_allclose(x1, want, **TOL)


# ----------------------------------------------------------------------------- producers

EVAL = dict(
    layers=("conv1",),
    references=("prior",),
    maps=("grad_kl", "combi", "combi_add", "projection", "attention_x_recon"),
    grad=dict(smooth_kernel=3, smooth_sigma=1.0),
    projection=dict(steps=2, step_size=0.1),
    attention_x_recon=dict(variants=("difference", "released")),
)


def test_producers_built_from_config_by_name():
    names = [p.name for p in producers_lib.producers_from_config(EVAL)]
    assert names == [
        "recon",
        "center_prior",
        "attention_prior_conv1",
        "grad_kl",
        "combi",
        "combi_add",
        "projection",
        "recon_x_attention_prior_conv1",
        "recon_x_attention_released_conv1",
    ]
    projection = next(p for p in vm.producers_from_config(EVAL) if p.name == "projection")
    assert (projection.steps, projection.step_size, projection.lam) == (2, 0.1, 1.0)
    assert vm.producers_from_config({}) == []


@pytest.mark.parametrize(
    "change,field",
    [
        (dict(maps=("grad_typo",)), "eval.maps"),
        (dict(maps=("grad_kl", "grad_kl")), "eval.maps"),
        (dict(grad=dict(channel_reduce="median")), "eval.grad"),
        (dict(grad=dict(smooth_sigma=0.0)), "eval.grad"),
        (dict(grad=dict(kernel=3)), "eval.grad"),
        (dict(projection=dict(steps=0)), "eval.projection"),
        (dict(projection=dict(lam=-1.0)), "eval.projection"),
        (dict(projection=dict(alpha=0.1)), "eval.projection"),
        (dict(combi=dict(normalize_on="batch")), "eval.combi"),
        (dict(attention_x_recon=dict(variants=("gradcam",))), "eval.attention_x_recon.variants"),
    ],
)
def test_bad_config_entry_names_the_field(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        one_class.from_config({**EVAL, **change})


def test_producers_on_a_context_reuse_maps_and_record_cost(tiny):
    model, variables, x, encode_fn, decode_fn = tiny
    images = np.concatenate([np.asarray(x), np.asarray(x)[:2]])
    masks = np.zeros(images.shape[:3], np.float32)
    masks[3:, 2:4, 2:4] = 1
    ctx = maps_lib.Context(
        model=model, variables=variables, train_images=np.asarray(x), test_images=images,
        masks=masks, labels=np.array([0, 0, 0, 1, 1]), batch_size=2, likelihood="bernoulli",
        figure_dir=None,
    )  # fmt: skip
    producers, evaluators = one_class.from_config({**EVAL, "evaluators": ("localization",)})
    results, produced = one_class.evaluate(ctx, producers, evaluators)
    assert list(produced) == [p.name for p in producers]
    # combi from the kept grad_kl and recon, normalized over the whole test set
    np.testing.assert_allclose(
        produced["combi"], vm.product_combination(produced["grad_kl"], produced["recon"]), rtol=1e-6
    )
    direct = vm.input_gradient_maps(
        encode_fn, decode_fn, images, batch_size=2, term="kl", likelihood="bernoulli",
        smooth_kernel=3, smooth_sigma=1.0,
    )  # fmt: skip
    np.testing.assert_allclose(produced["grad_kl"], direct, **TOL)
    np.testing.assert_allclose(
        produced["recon_x_attention_prior_conv1"],
        vm.product_combination(produced["attention_prior_conv1"], produced["recon"]),
        rtol=1e-6,
    )
    cost = results["map_cost"]
    assert set(cost) == set(produced)
    assert cost["combi"]["wall_s"] >= cost["grad_kl"]["wall_s"] + cost["recon"]["wall_s"]
    assert cost["projection"]["ms_per_image"] == pytest.approx(
        1000 * cost["projection"]["wall_s"] / 5
    )
    assert set(results["metrics"]) == set(produced)
    # "train" normalization uses only training images: changing the test set's extremes
    # leaves the range alone
    train_norm = vm.GradientCombination("product", vm.GradientSettings(smooth_kernel=0),
                                        normalize_on="train")  # fmt: skip
    ctx2 = maps_lib.Context(
        model=model, variables=variables, train_images=np.asarray(x), test_images=images,
        masks=masks, labels=np.array([0, 0, 0, 1, 1]), batch_size=2,
    )  # fmt: skip
    got = ctx2.map_of(train_norm)
    kl_train = vm.input_gradient_maps(encode_fn, decode_fn, np.asarray(x), batch_size=2, term="kl")
    kl_test = ctx2.map_of(vm.InputGradient("kl", vm.GradientSettings(smooth_kernel=0)))
    lo, hi = vm.set_range(kl_train)
    np.testing.assert_allclose(
        got, (kl_test - lo) / (hi - lo) * ctx2.map_of(maps_lib.ReconstructionError()), rtol=1e-5
    )


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("attention_x_recon.layers", ("conv9",), r"eval\.attention_x_recon\.layers"),
        ("projection.steps", 0, r"eval\.projection"),
        ("maps", ("grad_kl", "projektion"), r"eval\.maps"),
    ],
)
def test_check_config_refuses_a_bad_entry_before_any_work(field, value, match):
    from experiments.configs import mnist_localization as cfg
    from vae_xai.models.conv_vae import mnist_vae

    config = cfg.get_config("smoke")
    section, _, key = field.rpartition(".")
    (config.eval[section] if section else config.eval)[key] = value
    with pytest.raises(ConfigError, match=match):
        one_class.check_config(mnist_vae(config.model.latent_dim), config, (28, 28, 1))
    one_class.check_config(
        mnist_vae(4), cfg.get_config("smoke"), (28, 28, 1)
    )  # the default is fine
