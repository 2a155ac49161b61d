"""UCSD Ped1 VAE: shapes, attention at conv1/2/3 vs a jacrev + Grad-CAM reference written with
``lax.conv``, and a one-step smoke train."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_xai import attention as att
from vae_xai.encoder_split import split_encoder
from vae_xai.models.ucsd_vae import CONV_NAMES, UCSDVAE, dense_after
from vae_xai.sharding import make_mesh
from vae_xai.train import init_state, jit_step, vae_update_fn

TOL = dict(rtol=2e-4, atol=2e-5)
PADDING = {"conv1": ((1, 1), (1, 1)), "conv2": ((1, 1), (1, 1)), "conv3": "VALID"}


def test_paper_setting_shapes():
    model = UCSDVAE()
    x = jax.ShapeDtypeStruct((2, 100, 100, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, jax.random.key(1)), variables, x)
    assert {k: v.shape for k, v in out.items()} == {
        "conv1": (2, 50, 50, 32),
        "conv2": (2, 25, 25, 64),
        "conv3": (2, 12, 12, 128),
        "mu": (2, 32),
        "logvar": (2, 32),
        "z": (2, 32),
        "logits": (2, 100, 100, 1),
    }


@pytest.fixture(scope="module")
def tiny():
    model = UCSDVAE(input_size=28, channels=(3, 4, 5), hidden=7, latent_dim=4)
    x = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1))
    variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)
    return model, variables, x


def test_tiny_shapes_and_errors(tiny):
    model, variables, x = tiny
    out = model.apply(variables, x, jax.random.key(3))
    assert out["conv1"].shape == (2, 14, 14, 3)
    assert out["conv2"].shape == (2, 7, 7, 4)
    assert out["conv3"].shape == (2, 3, 3, 5)
    assert out["logits"].shape == x.shape
    with pytest.raises(ValueError, match="expected input"):
        model.apply(variables, jnp.zeros((1, 28, 28, 3)))
    with pytest.raises(ValueError, match="4 times an odd"):
        UCSDVAE(input_size=32).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


def reference_head(params, layer):
    """``A -> (mu, logvar)`` written with ``lax.conv_general_dilated`` and matmuls."""
    first = CONV_NAMES.index(layer) + 1

    def head(a):
        h = a
        for name in CONV_NAMES[first:]:
            p = params[name]["conv"]
            h = jax.lax.conv_general_dilated(
                h, p["kernel"], (2, 2), PADDING[name], dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            h = jax.nn.relu(h + p["bias"])
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ params["fc1"]["kernel"] + params["fc1"]["bias"])
        stats = h @ params["fc_latent"]["kernel"] + params["fc_latent"]["bias"]
        return jnp.split(stats, 2, axis=-1)

    return head


def reference_gradcam(head, features, score):
    jac = jax.jacrev(lambda a: score(*head(a)))(features)  # (B, D, B, h, w, c)
    per_sample = jnp.stack([jac[i, :, i] for i in range(features.shape[0])])
    alpha = per_sample.mean(axis=(2, 3))
    return jax.nn.relu(jnp.einsum("bdc,bhwc->bdhw", alpha, features))


@pytest.mark.parametrize("layer", CONV_NAMES)
def test_attention_matches_jacrev_reference(tiny, layer):
    model, variables, x = tiny
    split = split_encoder(
        model, variables, x, layer=layer, method="encode", dense_after=dense_after(layer)
    )
    assert (split.shift_head_fn is not None) == (layer == "conv3")
    enc = model.apply(variables, x, method="encode")
    np.testing.assert_allclose(split.features, enc[layer], **TOL)
    head = reference_head(variables["params"], layer)
    mu, logvar = head(enc[layer])
    np.testing.assert_allclose(mu, enc["mu"], **TOL)
    np.testing.assert_allclose(logvar, enc["logvar"], **TOL)

    got = att.latent_attention(**split.attention_kwargs())
    want = reference_gradcam(head, enc[layer], lambda mu, lv: mu)
    assert got.shape == (2, 4) + enc[layer].shape[1:3]
    np.testing.assert_allclose(got, want, **TOL)
    assert float(jnp.max(got)) > 0

    ref_mu = jnp.asarray([0.5, -0.5, 1.0, 0.0])
    got = att.anomaly_attention(**split.attention_kwargs(), ref_mu=ref_mu, sample=False)
    want = reference_gradcam(head, enc[layer], lambda mu, lv: ref_mu - mu)
    np.testing.assert_allclose(got, want, **TOL)


def test_one_step_train_smoke(tiny):
    model, _, x = tiny
    optimizer = optax.adam(1e-3)
    state = init_state(model, optimizer, (28, 28, 1), seed=0)
    assert state.model_state == {}  # no BatchNorm
    before = jax.tree.map(np.asarray, state.params)
    step = jit_step(vae_update_fn(model, optimizer, likelihood="bernoulli"), make_mesh(1))
    state, m = step(state, {"image": np.asarray(x)})
    assert int(state.step) == 1
    assert all(np.isfinite(float(v)) for v in m.values())
    changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != b)), state.params, before)
    assert all(jax.tree.leaves(changed))
