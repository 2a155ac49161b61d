"""vae_xai.fast_conv equals XLA's convolutions: forward, gradients, second order, vmap, layers.

References are ``lax.conv_transpose`` / ``lax.conv_general_dilated`` and their autodiff, in
float64, so any indexing or padding mistake shows as an O(1) error, not rounding.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from vae_xai import fast_conv as fc
from vae_xai.models import dsprites_vae, mnist_vae
from vae_xai.models.resnet_vae import ResNetVAE
from vae_xai.models.ucsd_vae import UCSDVAE
from vae_xai.train import create_state, vae_update_fn

DN = ("NHWC", "HWIO", "NHWC")

# (input size, kernel, stride, padding): every layer our models use, plus odd sizes, kernels
# smaller/larger than the stride, stride 3, asymmetric explicit padding.
CASES = [
    (8, 4, 2, "SAME"),  # conv VAE deconvs / convs
    (7, 4, 2, "SAME"),  # MNIST 7 -> 14
    (12, 3, 2, "VALID"),  # UCSD deconv1 12 -> 25; conv3 25 -> 12 (below)
    (25, 3, 2, "VALID"),
    (10, 4, 2, ((1, 1), (1, 1))),  # UCSD conv1/conv2
    (16, 7, 2, ((3, 3), (3, 3))),  # ResNet stem
    (8, 3, 2, ((1, 1), (1, 1))),  # ResNet stride-2 3x3
    (8, 1, 2, "VALID"),  # ResNet 1x1 stride-2 projection
    (9, 2, 2, "VALID"),
    (6, 5, 3, "SAME"),
    (5, 4, 2, ((2, 1), (0, 3))),
    (6, 3, 1, "SAME"),
]


def _rand(rng, *shape):
    return jnp.asarray(rng.normal(size=shape))


def _ops(s, pad):
    return {
        "transpose": (
            lambda x, w: lax.conv_transpose(x, w, (s, s), pad),
            lambda x, w: fc.fast_conv_transpose(x, w, (s, s), pad),
        ),
        "strided": (
            lambda x, w: lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=DN),
            lambda x, w: fc.fast_strided_conv(x, w, (s, s), pad),
        ),
    }


@pytest.fixture(params=[0, 10**9], ids=["subpixel_forward", "xla_forward"])
def subpixel_threshold(request, monkeypatch):
    # Both forward branches of fast_conv_transpose, on every case.
    monkeypatch.setattr(fc, "SUBPIXEL_MIN_PIXELS", request.param)
    return request.param


@pytest.mark.parametrize("op", ["transpose", "strided"])
@pytest.mark.parametrize("n, k, s, pad", CASES)
def test_forward_and_gradients_equal_xla(subpixel_threshold, op, n, k, s, pad):
    rng = np.random.default_rng(n * 100 + k * 10 + s)
    with jax.enable_x64(True):
        x, w = _rand(rng, 2, n, n + 1, 3), _rand(rng, k, k, 3, 5)
        ref, fast = _ops(s, pad)[op]
        y_ref, y = ref(x, w), fast(x, w)
        assert y.shape == y_ref.shape
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-11)
        g = _rand(rng, *y_ref.shape)
        grads_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * g), (0, 1))(x, w)
        grads = jax.jit(jax.grad(lambda x, w: jnp.sum(fast(x, w) * g), (0, 1)))(x, w)
        for a, b in zip(grads, grads_ref, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("op", ["transpose", "strided"])
@pytest.mark.parametrize("n, k, s, pad", [CASES[0], CASES[3], CASES[5], CASES[10]])
def test_second_order_and_vmap(op, n, k, s, pad):
    """grad of a function of a vjp (what L_AD differentiates), and vmap over cotangents.

    With the default threshold, (25, 3, 2, VALID) and (16, 7, 2) have transposed-conv outputs
    above SUBPIXEL_MIN_PIXELS (sub-pixel forward) and the others below (XLA forward).
    """
    rng = np.random.default_rng(7)
    with jax.enable_x64(True):
        x, w = _rand(rng, 2, n, n, 3), _rand(rng, k, k, 3, 4)
        ref, fast = _ops(s, pad)[op]
        g = _rand(rng, *ref(x, w).shape)

        def outer(f):
            def h(x, w):
                dx, dw = jax.grad(lambda x, w: jnp.sum(f(x, w) * g), (0, 1))(x, w)
                return jnp.sum(jnp.tanh(dx)) + jnp.sum(dw**2)

            return jax.grad(h, (0, 1))(x, w)

        for a, b in zip(outer(fast), outer(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)

        gs = jnp.stack([g, -2.0 * g, g**2])

        def vmapped(f):
            return jax.vmap(lambda c: jax.vjp(lambda x: f(x, w), x)[1](c)[0])(gs)

        np.testing.assert_allclose(vmapped(fast), vmapped(ref), rtol=0, atol=1e-10)


def test_subpixel_conv_transpose_alone_equals_xla():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        for n, k, s, pad in CASES:
            x, w = _rand(rng, 1, n, n, 2), _rand(rng, k, k, 2, 3)
            np.testing.assert_allclose(
                fc.conv_transpose(x, w, (s, s), pad),
                lax.conv_transpose(x, w, (s, s), pad),
                rtol=0,
                atol=1e-11,
            )


@pytest.mark.parametrize(
    "plain, fast, shape",
    [
        (
            nn.ConvTranspose(6, (4, 4), strides=(2, 2), padding="SAME"),
            fc.ConvTranspose(6, (4, 4), strides=(2, 2), padding="SAME", impl="fast"),
            (2, 5, 5, 3),
        ),
        (
            nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding="VALID", use_bias=False),
            fc.ConvTranspose(4, (3, 3), strides=(2, 2), padding="VALID", use_bias=False),
            (2, 6, 6, 3),
        ),
        (
            nn.Conv(6, (4, 4), strides=(2, 2), padding="SAME"),
            fc.Conv(6, (4, 4), strides=(2, 2), padding="SAME", impl="fast"),
            (2, 8, 8, 3),
        ),
        (
            nn.Conv(6, (3, 3), strides=(2, 2), padding="REFLECT", use_bias=False),
            fc.Conv(6, (3, 3), strides=(2, 2), padding="REFLECT", use_bias=False),
            (2, 8, 8, 3),
        ),
    ],
    ids=["deconv_same", "deconv_valid_nobias", "conv_same", "conv_reflect"],
)
def test_layers_are_drop_in(plain, fast, shape):
    """Same parameter tree and initial values as the Flax layer; same outputs and gradients."""
    x = jax.random.normal(jax.random.key(0), shape)
    v_plain = plain.init(jax.random.key(1), x)
    v_fast = fast.init(jax.random.key(1), x)
    assert jax.tree.structure(v_plain) == jax.tree.structure(v_fast)
    for a, b in zip(jax.tree.leaves(v_plain), jax.tree.leaves(v_fast), strict=True):
        np.testing.assert_array_equal(a, b)  # same initializers, same keys
    np.testing.assert_allclose(fast.apply(v_plain, x), plain.apply(v_plain, x), atol=1e-5)

    def loss(mod):
        return lambda v: jnp.sum(jnp.sin(mod.apply(v, x)))

    g_fast, g_plain = jax.grad(loss(fast))(v_plain), jax.grad(loss(plain))(v_plain)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "make, shape, has_bn",
    [
        (lambda impl: dsprites_vae(conv_impl=impl), (64, 64, 1), False),
        (lambda impl: mnist_vae(conv_impl=impl), (28, 28, 1), False),
        (
            lambda impl: ResNetVAE(
                image_size=32,
                width=4,
                latent_dim=8,
                padding="reflect",
                conv_impl=impl,
                stage_sizes=(1, 1, 1, 1),  # every block kind (identity and projection) once
            ),
            (32, 32, 3),
            True,
        ),
        (
            lambda impl: UCSDVAE(
                input_size=28, channels=(4, 8, 8), hidden=16, latent_dim=4, conv_impl=impl
            ),
            (28, 28, 1),
            False,
        ),
    ],
    ids=["dsprites_vae", "mnist_vae", "resnet_vae", "ucsd_vae"],
)
def test_models_fast_equals_xla(make, shape, has_bn):
    """A checkpoint of the plain-XLA model restores into the fast one: same outputs and grads."""
    plain, fast = make("xla"), make("fast")
    x = (jax.random.uniform(jax.random.key(0), (3, *shape)) > 0.5).astype(jnp.float32)
    # (jitted: op by op, a ResNet's forward compiles hundreds of small programs)
    variables = jax.jit(plain.init)(jax.random.key(1), x)
    v_fast = jax.eval_shape(fast.init, jax.random.key(1), x)
    assert jax.tree.structure(variables) == jax.tree.structure(v_fast)
    out_p = jax.jit(plain.apply)(variables, x, jax.random.key(2))
    out_f = jax.jit(fast.apply)(variables, x, jax.random.key(2))
    for name in ("mu", "logvar", "logits"):
        np.testing.assert_allclose(out_f[name], out_p[name], rtol=1e-4, atol=1e-4)

    def grads(model):
        update = vae_update_fn(model, optax.sgd(1.0), beta=2.0)
        model_state = {"batch_stats": variables["batch_stats"]} if has_bn else None
        state = create_state(variables["params"], optax.sgd(1.0), model_state)
        new_state, metrics = jax.jit(update)(state, {"image": x}, jax.random.key(3))
        # sgd(1): params - new params = the gradient
        return metrics, jax.tree.map(lambda a, b: a - b, state.params, new_state.params)

    (m_p, g_p), (m_f, g_f) = grads(plain), grads(fast)
    np.testing.assert_allclose(m_f["loss"], m_p["loss"], rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_p))
    for a, b in zip(jax.tree.leaves(g_f), jax.tree.leaves(g_p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)


def test_auto_is_fast_on_cpu_and_bad_impl_is_named():
    assert fc.resolve_impl("auto") == ("fast" if jax.default_backend() == "cpu" else "xla")
    with pytest.raises(ValueError, match="impl must be"):
        fc.Conv(4, (3, 3), impl="cudnn")
    with pytest.raises(ValueError, match="impl must be"):
        fc.ConvTranspose(4, (3, 3), impl="cudnn").init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="expected x"):
        fc.fast_conv_transpose(jnp.zeros((4, 4, 1)), jnp.zeros((3, 3, 1, 1)), (2, 2), "SAME")
    with pytest.raises(ValueError, match="channels"):
        fc.fast_strided_conv(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 1, 1)), (2, 2), "SAME")
    with pytest.raises(ValueError, match="padding"):
        fc.fast_strided_conv(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), (2, 2), "FULL")


@pytest.mark.parametrize("features", [1, 3])
@pytest.mark.parametrize("padding", ["SAME", 1, "VALID"])
def test_narrow_stride1_conv_is_padded_and_exact(features, padding):
    """A stride-1 conv to < MIN_OUT_CHANNELS channels runs padded to MIN_OUT_CHANNELS outputs
    (the jaxpr shows the wide kernel) and equals nn.Conv in float64: forward, gradients of
    input and kernel, and a second-order gradient."""
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.key(0), (2, 9, 7, 5), jnp.float64)
        plain = nn.Conv(features, (3, 3), padding=padding, param_dtype=jnp.float64)
        fast = fc.Conv(features, (3, 3), padding=padding, impl="fast", param_dtype=jnp.float64)
        v = plain.init(jax.random.key(1), x)
        jaxpr = str(jax.make_jaxpr(fast.apply)(v, x))
        assert f"3,3,5,{fc.MIN_OUT_CHANNELS}]" in jaxpr.replace(" ", "")
        np.testing.assert_allclose(fast.apply(v, x), plain.apply(v, x), rtol=0, atol=1e-12)

        def loss(mod):
            return lambda v, x: jnp.sum(jnp.sin(mod.apply(v, x)))

        for a, b in zip(
            jax.tree.leaves(jax.grad(loss(fast), argnums=(0, 1))(v, x)),
            jax.tree.leaves(jax.grad(loss(plain), argnums=(0, 1))(v, x)),
            strict=True,
        ):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)

        def second(mod):  # d/dv of |d loss / dx|^2, as L_AD differentiates an input gradient
            return jax.grad(lambda v: jnp.sum(jax.grad(loss(mod), argnums=1)(v, x) ** 2))(v)

        for a, b in zip(jax.tree.leaves(second(fast)), jax.tree.leaves(second(plain)), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
