"""ConvVAE shapes, named intermediates and input checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from vae_xai.models import ConvVAE, dsprites_vae, mnist_vae


@pytest.mark.parametrize(
    "model, shape, feats",
    [
        (mnist_vae(), (28, 28, 1), {"conv1": (14, 14, 64), "conv2": (7, 7, 128)}),
        (
            dsprites_vae(),
            (64, 64, 1),
            {
                "conv1": (32, 32, 32),
                "conv2": (16, 16, 32),
                "conv3": (8, 8, 64),
                "conv4": (4, 4, 64),
            },
        ),
    ],
)
def test_named_intermediates(model, shape, feats):
    x = jnp.zeros((2, *shape))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    out = jax.eval_shape(lambda v: model.apply(v, x, jax.random.key(1)), variables)
    for name, s in feats.items():
        assert out[name].shape == (2, *s)
    d = model.latent_dim
    assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (2, d)
    assert out["logits"].shape == (2, *shape)
    fc1 = variables["params"]["encoder"]["fc1"]["kernel"]
    last = list(feats.values())[-1]
    assert fc1.shape[0] == last[0] * last[1] * last[2]  # fc1 consumes flatten(last conv)


def test_sampling_uses_the_key():
    model = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=3)
    x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 1))
    v = model.init(jax.random.key(0), x)
    det = model.apply(v, x)
    assert jnp.array_equal(det["z"], det["mu"])
    a = model.apply(v, x, jax.random.key(1))
    b = model.apply(v, x, jax.random.key(2))
    assert not jnp.allclose(a["z"], b["z"])


def test_bad_input_shapes():
    model = mnist_vae()
    with pytest.raises(ValueError, match=r"expected input \(B, 28, 28, 1\)"):
        model.init(jax.random.key(0), jnp.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match="divisible"):
        ConvVAE(input_shape=(30, 30, 1)).init(jax.random.key(0), jnp.zeros((1, 30, 30, 1)))
