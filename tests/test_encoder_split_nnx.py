"""split_nnx_encoder on user-style Flax NNX VAEs, against independent jax.jacrev Grad-CAM."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vae_xai import attention as att
from vae_xai import losses
from vae_xai.encoder_split import EncoderSplit, split_nnx_encoder

LATENT = 3
B, H = 2, 16


class ConvBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, *, stride: int, rngs: nnx.Rngs, dtype=jnp.float32):
        self.conv = nnx.Conv(
            cin, cout, (3, 3), strides=stride, rngs=rngs, dtype=dtype, param_dtype=dtype
        )

    def __call__(self, x):
        return nnx.relu(self.conv(x))


class Encoder(nnx.Module):
    """conv blocks 16 -> 8 -> 4 -> 4, BatchNorm + Dropout between block2 and block3, Linear."""

    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.block1 = ConvBlock(1, 4, stride=2, rngs=rngs, dtype=dtype)
        self.block2 = ConvBlock(4, 6, stride=2, rngs=rngs, dtype=dtype)
        self.norm = nnx.BatchNorm(6, rngs=rngs, dtype=dtype, param_dtype=dtype)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.block3 = ConvBlock(6, 5, stride=1, rngs=rngs, dtype=dtype)
        self.fc = nnx.Linear(4 * 4 * 5, 2 * LATENT, rngs=rngs, dtype=dtype, param_dtype=dtype)

    def __call__(self, x):
        h = self.block3(self.drop(self.norm(self.block2(self.block1(x)))))
        mu, logvar = jnp.split(self.fc(h.reshape(h.shape[0], -1)), 2, axis=-1)
        return mu, logvar


class VAE(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, dtype=jnp.float32):
        self.encoder = Encoder(rngs=rngs, dtype=dtype)
        self.decoder = nnx.Linear(LATENT, H * H, rngs=rngs, dtype=dtype, param_dtype=dtype)

    def encode(self, x):
        mu, logvar = self.encoder(x)
        return {"mu": mu, "logvar": logvar}

    def decode(self, z):
        return self.decoder(z).reshape(z.shape[0], H, H, 1)


def make_model(seed: int = 0, dtype=jnp.float32) -> VAE:
    model = VAE(rngs=nnx.Rngs(seed), dtype=dtype)
    # non-trivial BatchNorm statistics so inference mode is not the identity
    enc = model.encoder
    stats_dtype = enc.norm.mean[...].dtype
    enc.norm.mean[...] = 0.1 * jnp.arange(6, dtype=stats_dtype)
    enc.norm.var[...] = 1.0 + 0.2 * jnp.arange(6, dtype=stats_dtype)
    model.eval()
    return model


def images(seed: int = 1, n: int = B, dtype=jnp.float32) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, H, H, 1), dtype)


def features_after_block2(model: VAE, x):
    enc = model.encoder
    return enc.block2(enc.block1(x))


def head_after_block2(model: VAE, a):
    enc = model.encoder
    h = enc.block3(enc.drop(enc.norm(a)))
    return enc.fc(h.reshape(h.shape[0], -1))[:, :LATENT]


def features_after_block3(model: VAE, x):
    enc = model.encoder
    return enc.block3(enc.drop(enc.norm(features_after_block2(model, x))))


def head_after_block3(model: VAE, a):
    return model.encoder.fc(a.reshape(a.shape[0], -1))[:, :LATENT]


def jacrev_gradcam(mu_of_features, a) -> np.ndarray:
    """Grad-CAM from the full Jacobian: alpha = spatial mean of d mu_i / dA, ReLU(sum_k)."""
    jac = np.asarray(jax.jacrev(mu_of_features)(a))  # (B, D, B, h, w, c)
    idx = np.arange(a.shape[0])
    per_sample = jac[idx, :, idx]  # (B, D, h, w, c)
    alpha = per_sample.mean(axis=(2, 3))  # (B, D, c)
    return np.maximum(np.einsum("bdc,bhwc->bdhw", alpha, np.asarray(a)), 0.0)


@pytest.mark.parametrize("layer", ["block2", "encoder/block2"])
def test_generic_path_matches_jacrev(layer):
    model, x = make_model(), images()
    split = split_nnx_encoder(model, x, layer=layer, method="encode")
    assert isinstance(split, EncoderSplit) and split.shift_head_fn is None
    a_ref = features_after_block2(model, x)
    np.testing.assert_allclose(split.features, a_ref, rtol=1e-6, atol=1e-6)
    mu_ref = model.encode(x)["mu"]
    np.testing.assert_allclose(split.outputs["mu"], mu_ref, rtol=1e-6, atol=1e-6)
    mu, logvar = split.head_fn(a_ref)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-5, atol=1e-6)

    maps = att.latent_attention(split.head_fn, split.features)
    ref = jacrev_gradcam(lambda a: head_after_block2(model, a), a_ref)
    assert maps.shape == (B, LATENT, 4, 4)
    assert np.abs(ref).max() > 1e-3  # the comparison is not between two zero maps
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-6)


def test_dense_after_fast_path_matches_jacrev():
    model, x = make_model(), images()
    split = split_nnx_encoder(model, x, layer="block3", method="encode", dense_after="fc")
    assert split.shift_head_fn is not None
    a_ref = features_after_block3(model, x)
    np.testing.assert_allclose(split.features, a_ref, rtol=1e-6, atol=1e-6)

    # the fast form is exactly head(A + spatially constant shift)
    delta = jax.random.normal(jax.random.key(2), (B, a_ref.shape[-1]))
    shifted = np.asarray(model.encoder.fc((a_ref + delta[:, None, None, :]).reshape(B, -1)))
    np.testing.assert_allclose(split.shift_head_fn(delta)[0], shifted[:, :LATENT], rtol=1e-5)
    np.testing.assert_allclose(split.shift_head_fn(delta)[1], shifted[:, LATENT:], rtol=1e-5)

    ref = jacrev_gradcam(lambda a: head_after_block3(model, a), a_ref)
    assert np.abs(ref).max() > 1e-3
    fast = att.latent_attention(**split.attention_kwargs())
    generic = att.latent_attention(split.head_fn, split.features)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(generic, ref, rtol=1e-4, atol=1e-6)


def test_tuple_output_callable_method_and_list_path():
    class Stack(nnx.Module):
        def __init__(self, rngs):
            self.blocks = nnx.List(
                [ConvBlock(1, 4, stride=2, rngs=rngs), ConvBlock(4, 4, stride=1, rngs=rngs)]
            )
            self.fc = nnx.Linear(8 * 8 * 4, 2 * LATENT, rngs=rngs)

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            out = self.fc(x.reshape(x.shape[0], -1))
            return out[:, :LATENT], out[:, LATENT:]

    model, x = Stack(nnx.Rngs(3)), images()
    split = split_nnx_encoder(model, x, layer="blocks/0", method=lambda m, x: m(x))
    a_ref = model.blocks[0](x)

    def head(a):
        return model.fc(model.blocks[1](a).reshape(B, -1))[:, :LATENT]

    np.testing.assert_allclose(split.features, a_ref, rtol=1e-6, atol=1e-6)
    maps = att.latent_attention(split.head_fn, split.features)
    np.testing.assert_allclose(maps, jacrev_gradcam(head, a_ref), rtol=1e-4, atol=1e-6)


def test_sequential_encoder_with_index_paths():
    rngs = nnx.Rngs(5)
    model = nnx.Sequential(
        ConvBlock(1, 4, stride=2, rngs=rngs),
        ConvBlock(4, 5, stride=2, rngs=rngs),
        lambda h: h.reshape(h.shape[0], -1),
        nnx.Linear(4 * 4 * 5, 2 * LATENT, rngs=rngs),
        lambda out: (out[:, :LATENT], out[:, LATENT:]),
    )
    x = images()
    split = split_nnx_encoder(model, x, layer="layers/1", dense_after="layers/3")
    a_ref = model.layers[1](model.layers[0](x))
    np.testing.assert_allclose(split.features, a_ref, rtol=1e-6, atol=1e-6)

    def head(a):
        return model.layers[3](a.reshape(B, -1))[:, :LATENT]

    ref = jacrev_gradcam(head, a_ref)
    np.testing.assert_allclose(
        att.latent_attention(**split.attention_kwargs()), ref, rtol=1e-4, atol=1e-6
    )


def test_module_state_unchanged():
    model, x = make_model(), images()
    model.train()  # BatchNorm would update its statistics, Dropout would advance its RNG

    def to_numpy(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.array(a)

    def snapshot():
        return jax.tree.map(to_numpy, nnx.state(model))

    before, graphdef_before = snapshot(), nnx.graphdef(model)
    block2, block2_call = model.encoder.block2, type(model.encoder.block2).__call__

    split = split_nnx_encoder(model, x, layer="block3", method="encode", dense_after="fc")
    att.latent_attention(**split.attention_kwargs())
    split.head_fn(split.features)

    after = snapshot()
    assert jax.tree.structure(after) == jax.tree.structure(before)
    for u, v in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    assert nnx.graphdef(model) == graphdef_before
    assert model.encoder.block2 is block2 and type(block2).__call__ is block2_call

    # the premise: running the model itself in train mode does change its state
    model.encode(x)
    changed = [
        not np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree.leaves(before), jax.tree.leaves(snapshot()), strict=True)
    ]
    assert any(changed)


def test_split_is_a_snapshot_of_the_parameters():
    model, x = make_model(), images()
    split = split_nnx_encoder(model, x, layer="block2", method="encode")
    mu0 = np.asarray(split.head_fn(split.features)[0])
    model.encoder.fc.bias[...] += 1.0  # a later in-place update of the user's model
    np.testing.assert_array_equal(split.head_fn(split.features)[0], mu0)


def test_jit_vmap_and_nnx_jit():
    model = make_model()
    xs = images(n=3 * B).reshape(3, B, H, H, 1)

    def maps_of(x):
        split = split_nnx_encoder(model, x, layer="block3", method="encode", dense_after="fc")
        return att.latent_attention(**split.attention_kwargs())

    eager = np.stack([np.asarray(maps_of(x)) for x in xs])
    np.testing.assert_allclose(jax.jit(maps_of)(xs[0]), eager[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(maps_of)(xs), eager, rtol=1e-5, atol=1e-6)

    @nnx.jit
    def with_model_argument(m, x):
        split = split_nnx_encoder(m, x, layer="encoder/block2", method="encode")
        return att.latent_attention(split.head_fn, split.features)

    a = features_after_block2(model, xs[1])
    ref = jacrev_gradcam(lambda a: head_after_block2(model, a), a)
    np.testing.assert_allclose(with_model_argument(model, xs[1]), ref, rtol=1e-4, atol=1e-6)


def test_errors_name_the_argument():
    model, x = make_model(), images()
    with pytest.raises(ValueError, match=r"layer='block9'.*no submodule 'block9'"):
        split_nnx_encoder(model, x, layer="block9", method="encode")
    with pytest.raises(ValueError, match=r"layer='encoder/nope'"):
        split_nnx_encoder(model, x, layer="encoder/nope", method="encode")
    with pytest.raises(ValueError, match=r"layer='conv' is ambiguous"):
        split_nnx_encoder(model, x, layer="conv", method="encode")
    with pytest.raises(ValueError, match=r"layer='decoder' was not called"):
        split_nnx_encoder(model, x, layer="decoder", method="encode")
    with pytest.raises(ValueError, match=r"method='encode_nope'"):
        split_nnx_encoder(model, x, layer="block2", method="encode_nope")
    with pytest.raises(ValueError, match=r"dense_after='fc' has input size 80"):
        split_nnx_encoder(model, x, layer="block2", method="encode", dense_after="fc")
    with pytest.raises(ValueError, match=r"dense_after='missing'"):
        split_nnx_encoder(model, x, layer="block3", method="encode", dense_after="missing")
    with pytest.raises(TypeError, match=r"module must be a flax.nnx.Module.*split_encoder"):
        split_nnx_encoder(nn.Dense(3), x, layer="block2")
    with pytest.raises(TypeError, match=r"module must be a flax.nnx.Module"):
        split_nnx_encoder(object(), x, layer="block2")


def _ad_loss(model: VAE, x, eps, *, gamma: float):
    """Bernoulli ELBO + gamma * L_AD of the maps of latents 0 and 1 (paper Eq. 6-7)."""
    split = split_nnx_encoder(model, x, layer="block2", method="encode")
    mu, logvar = split.outputs["mu"], split.outputs["logvar"]
    maps = att.latent_attention(split.head_fn, split.features)
    lad = losses.attention_disentanglement_loss(maps[:, 0], maps[:, 1])
    logits = model.decode(mu + eps * jnp.exp(0.5 * logvar))
    elbo = losses.bernoulli_nll(logits, x) + losses.gaussian_kl(mu, logvar)
    return jnp.mean(elbo) + gamma * jnp.mean(lad), jnp.mean(lad)


@pytest.mark.slow
def test_ad_train_step_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        model = make_model(seed=4, dtype=jnp.float64)
        x = images(seed=5, dtype=jnp.float64)
        eps = jax.random.normal(jax.random.key(6), (B, LATENT), jnp.float64)
        gamma = 5.0
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        # the State holds the model's own Variables: copy, so the step below does not move it
        params, rest = jax.tree.map(jnp.copy, (params, rest))

        def losses_of(p):  # (total loss, L_AD alone)
            return jnp.stack(_ad_loss(nnx.merge(graphdef, p, rest), x, eps, gamma=gamma))

        losses_jit = jax.jit(losses_of)
        loss0, lad0 = np.asarray(losses_jit(params))
        assert 0.01 < lad0 < 0.99  # overlapping, non-identical maps

        # one jitted training step of the NNX model, in the usual NNX style
        optimizer = nnx.Optimizer(model, optax.sgd(1e-3), wrt=nnx.Param)

        @nnx.jit
        def step(model, optimizer):
            def loss_fn(m):
                return _ad_loss(m, x, eps, gamma=gamma)

            (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            lad_grads = nnx.grad(lambda m: loss_fn(m)[1])(model)  # checked below, not used
            optimizer.update(model, grads)
            return loss, grads, lad_grads

        loss, grads, lad_grads = step(model, optimizer)
        np.testing.assert_allclose(loss, loss0, rtol=1e-12)

        def dot(g, v):
            pairs = zip(jax.tree.leaves(g), jax.tree.leaves(v), strict=True)
            return sum(float(jnp.vdot(a, b)) for a, b in pairs)

        leaves, treedef = jax.tree.flatten(params)
        h = 1e-6
        for k in jax.random.split(jax.random.key(7), 2):
            parts = jax.random.split(k, len(leaves))
            noise = [
                jax.random.normal(kk, a.shape, a.dtype) for kk, a in zip(parts, leaves, strict=True)
            ]
            v = jax.tree.unflatten(treedef, noise)
            plus = losses_jit(jax.tree.map(lambda a, d: a + h * d, params, v))
            minus = losses_jit(jax.tree.map(lambda a, d: a - h * d, params, v))
            fd_total, fd_lad = np.asarray(plus - minus) / (2 * h)
            assert abs(fd_lad) > 1e-4  # L_AD really depends on the parameters
            np.testing.assert_allclose(dot(lad_grads, v), fd_lad, rtol=1e-5, atol=1e-8)
            np.testing.assert_allclose(dot(grads, v), fd_total, rtol=1e-5, atol=1e-8)

        # the step moved the model's parameters, downhill
        assert float(_ad_loss(model, x, eps, gamma=gamma)[0]) < float(loss0)
