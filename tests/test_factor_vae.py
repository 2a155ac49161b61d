"""FactorVAE / AD-FactorVAE: L_AD, the TC estimate, the discriminator, and the train steps.

The AD gradient is checked against ``jax.grad`` of an independently written AD term (head
written out by hand, Grad-CAM from the full ``jax.jacrev``), so the test proves that the
gradient of ``lambda * L_AD`` really flows through the attention computation.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_xai import disentangle as dis
from vae_xai import losses
from vae_xai.models.conv_vae import ConvVAE
from vae_xai.models.factor_vae import FactorDiscriminator, init_factor_vae
from vae_xai.train import create_state, vae_update_fn

D = 4  # latent dims of the tiny VAE


def tiny_vae() -> ConvVAE:
    # 16x16 input, conv1 (8x8x6), conv2 (4x4x8) -> fc1 (Dense 16) -> fc_latent.
    return ConvVAE(input_shape=(16, 16, 1), channels=(6, 8), hidden=16, latent_dim=D)


def tiny_disc() -> FactorDiscriminator:
    return FactorDiscriminator(hidden=32, num_layers=2)


@pytest.fixture(scope="module")
def setup():
    model, disc = tiny_vae(), tiny_disc()
    params = jax.jit(
        lambda k: init_factor_vae(k, model, disc, input_shape=(16, 16, 1), latent_dim=D)
    )(jax.random.key(0))
    rng = np.random.default_rng(1)
    # binary noise images (eager jax ops are slow to dispatch on a busy CPU: use NumPy)
    x = jnp.asarray(rng.random((6, 16, 16, 1)) > 0.7, jnp.float32)
    x2 = jnp.asarray(rng.random((6, 16, 16, 1)) > 0.7, jnp.float32)
    return model, disc, params, {"image": x, "image_disc": x2}


# ----------------------------------------------------------------------------- L_AD


def test_lad_hand_cases():
    a = jnp.array([[[1.0, 2.0], [0.0, 3.0]]])
    np.testing.assert_allclose(losses.attention_disentanglement_loss(a, a), [1.0], rtol=1e-6)
    b = jnp.array([[[0.0, 0.0], [5.0, 0.0]]])
    np.testing.assert_allclose(losses.attention_disentanglement_loss(a, b), [0.0], atol=0)
    # partial overlap: min = [0, 1, 0] -> 2 * 1 / (2 + 2) = 0.5
    c = jnp.array([[[1.0, 1.0, 0.0]]])
    d = jnp.array([[[0.0, 1.0, 1.0]]])
    np.testing.assert_allclose(losses.attention_disentanglement_loss(c, d), [0.5], rtol=1e-6)


def test_lad_all_zero_is_zero_with_finite_gradient():
    z = jnp.zeros((2, 3, 3))
    assert np.all(np.asarray(losses.attention_disentanglement_loss(z, z)) == 0.0)
    g1, g2 = jax.grad(
        lambda a, b: jnp.sum(losses.attention_disentanglement_loss(a, b)), argnums=(0, 1)
    )(z, z)
    assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))


def test_lad_gradient_matches_central_differences():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        a1 = jnp.asarray(rng.uniform(0.1, 2.0, (2, 3, 4)))
        a2 = jnp.asarray(rng.uniform(0.1, 2.0, (2, 3, 4)))  # no ties almost surely

        def f(a, b):
            return jnp.sum(losses.attention_disentanglement_loss(a, b) * jnp.array([1.0, 0.7]))

        g1, g2 = jax.grad(f, argnums=(0, 1))(a1, a2)
        h = 1e-6
        for which, grad in ((0, g1), (1, g2)):
            fd = np.zeros(a1.shape)
            for idx in np.ndindex(a1.shape):
                e = np.zeros(a1.shape)
                e[idx] = h
                args_p = [a1, a2]
                args_m = [a1, a2]
                args_p[which] = args_p[which] + e
                args_m[which] = args_m[which] - e
                fd[idx] = (f(*args_p) - f(*args_m)) / (2 * h)
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- pairs


def test_pair_selection():
    maps = jnp.zeros((2, 4, 2, 2))
    maps = maps.at[0, 2].set(3.0).at[0, 0].set(1.0).at[0, 1].set(0.5)
    maps = maps.at[1, 3].set(1.0).at[1, 1].set(2.0)
    mu = jnp.array([[0.0, 5.0, 0.1, 3.0], [4.0, 0.0, 0.0, 0.0]])
    logvar = jnp.zeros((2, 4))
    np.testing.assert_array_equal(
        dis.top_pairs(dis.pair_scores(maps, mu, logvar, method="attention")), [[2, 0], [1, 3]]
    )
    np.testing.assert_array_equal(
        dis.top_pairs(dis.pair_scores(maps, mu, logvar, method="abs_mu"))[0], [1, 3]
    )
    kl_pairs = dis.top_pairs(dis.pair_scores(maps, mu, logvar, method="kl"))
    np.testing.assert_array_equal(kl_pairs[0], [1, 3])
    pairs = dis.random_pairs(jax.random.key(0), 1000, 4)
    assert np.all(pairs[:, 0] != pairs[:, 1]) and pairs.min() >= 0 and pairs.max() < 4
    assert len(np.unique(np.asarray(pairs[:, 0]) * 4 + np.asarray(pairs[:, 1]))) == 12


def test_pair_loss_all_is_mean_over_pairs():
    maps = jax.nn.relu(jax.random.normal(jax.random.key(3), (3, 4, 2, 2)))
    got, pairs = dis.pair_ad_loss(maps, jnp.zeros((3, 4)), jnp.zeros((3, 4)), pair="all")
    assert pairs is None
    want = np.mean(
        [
            losses.attention_disentanglement_loss(maps[:, i], maps[:, j])
            for i in range(4)
            for j in range(i + 1, 4)
        ],
        axis=0,
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="ad pair"):
        dis.pair_ad_loss(maps, jnp.zeros((3, 4)), jnp.zeros((3, 4)), pair="best")
    with pytest.raises(ValueError, match="PRNG"):
        dis.pair_ad_loss(maps, jnp.zeros((3, 4)), jnp.zeros((3, 4)), pair="random")


# ----------------------------------------------------------------------------- discriminator


def test_discriminator_architecture():
    disc = FactorDiscriminator()  # Kim & Mnih: 6 x Dense(1000) + leaky ReLU 0.2, 2 logits
    z = jnp.ones((5, 10))
    params = disc.init(jax.random.key(0), z)["params"]
    assert sorted(params) == sorted([f"fc{i}" for i in range(1, 7)] + ["logits"])
    assert params["fc1"]["kernel"].shape == (10, 1000)
    for i in range(2, 7):
        assert params[f"fc{i}"]["kernel"].shape == (1000, 1000)
    assert params["logits"]["kernel"].shape == (1000, 2)
    assert disc.apply({"params": params}, z).shape == (5, 2)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        disc.apply({"params": params}, jnp.ones((5, 2, 5)))


def test_leaky_relu_slope():
    disc = FactorDiscriminator(hidden=1, num_layers=1)
    params = {
        "fc1": {"kernel": jnp.ones((1, 1)), "bias": jnp.zeros(1)},
        "logits": {"kernel": jnp.array([[1.0, 0.0]]), "bias": jnp.zeros(2)},
    }
    out = disc.apply({"params": params}, jnp.array([[-2.0], [3.0]]))
    np.testing.assert_allclose(out[:, 0], [-0.4, 3.0], rtol=1e-6)


def test_tc_estimate_correlated_above_factorized():
    """A briefly trained discriminator gives a clearly higher TC on correlated samples."""
    n, dim = 256, 4
    rho = 0.95  # true TC of two such pairs: -log(1 - rho^2) = 2.33 nats

    def correlated(key):
        a, b = jax.random.split(key)
        u = jax.random.normal(a, (n, 2))
        e = jax.random.normal(b, (n, 2))
        return jnp.concatenate([u, rho * u + np.sqrt(1 - rho**2) * e], axis=1)

    def factorized(key):
        return jax.random.normal(key, (n, dim))

    disc = FactorDiscriminator(hidden=64, num_layers=3)
    opt = optax.adam(3e-3)

    def train_and_estimate(sampler):
        params = disc.init(jax.random.key(0), jnp.zeros((1, dim)))["params"]
        opt_state = opt.init(params)

        def step(carry, key):
            params, opt_state = carry
            k1, k2, k3 = jax.random.split(key, 3)

            def loss(p):
                return losses.discriminator_loss(
                    disc.apply({"params": p}, sampler(k1)),
                    disc.apply({"params": p}, losses.permute_dims(sampler(k2), k3)),
                )

            g = jax.grad(loss)(params)
            updates, opt_state = opt.update(g, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        keys = jax.random.split(jax.random.key(1), 300)
        (params, _), _ = jax.lax.scan(step, (params, opt_state), keys)
        z = sampler(jax.random.key(99))
        return jnp.mean(losses.total_correlation(disc.apply({"params": params}, z)))

    tc_corr = float(jax.jit(lambda: train_and_estimate(correlated))())
    tc_fact = float(jax.jit(lambda: train_and_estimate(factorized))())
    assert tc_corr > 1.0, tc_corr
    assert abs(tc_fact) < 0.3, tc_fact
    assert tc_corr > tc_fact + 0.8


# ----------------------------------------------------------------------------- optimizer


def test_optimizer_is_separate_per_network(setup):
    _, _, params, _ = setup
    opt = dis.factor_vae_optimizer()
    state = jax.jit(opt.init)(params)
    grads = jax.tree.map(np.zeros_like, params)
    grads["disc"] = jax.tree.map(np.ones_like, params["disc"])
    updates, _ = jax.jit(opt.update)(grads, state, params)
    assert all(float(jnp.abs(u).max()) == 0 for u in jax.tree.leaves(updates["vae"]))
    # Adam's first step is -lr * sign(g): lr 1e-4 for the discriminator
    np.testing.assert_allclose(jax.tree.leaves(updates["disc"])[0], -1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="vae"):
        opt.init({"encoder": params["vae"]})


# ----------------------------------------------------------------------------- train steps


def _loss_goes_down(update, loss_of, state, batch, steps=12):
    step = jax.jit(update)
    before = float(loss_of(state.params))
    for i in range(steps):
        state, metrics = step(state, batch, jax.random.key(i))
        assert all(np.isfinite(float(v)) for v in metrics.values()), metrics
    after = float(loss_of(state.params))
    assert after < before - 1.0, (before, after)
    return metrics


def test_beta_vae_steps_reduce_loss(setup):
    model, _, params, batch = setup
    opt = optax.adam(1e-3)
    update = vae_update_fn(model, opt, beta=4.0)
    state = create_state(params["vae"], opt)
    key = jax.random.key(123)

    @jax.jit
    def loss_of(p):
        _, m = update(create_state(p, opt), batch, key)
        return m["loss"]

    _loss_goes_down(update, loss_of, state, batch)


@pytest.mark.parametrize("ad_weight", [0.0, 5.0])
def test_factor_vae_steps_reduce_loss(setup, ad_weight):
    model, disc, params, batch = setup
    opt = dis.factor_vae_optimizer(vae_lr=1e-3, disc_lr=1e-3)
    kw = dict(gamma=10.0, ad_weight=ad_weight, ad_layer="conv2", ad_dense_after="fc1")
    update = dis.factor_vae_update_fn(model, disc, opt, **kw)
    loss_fn = dis.factor_vae_loss_fn(model, disc, **kw)
    key = jax.random.key(123)
    metrics = _loss_goes_down(
        update,
        jax.jit(lambda p: loss_fn(p, batch, key)[1]["loss"]),
        create_state(params, opt),
        batch,
    )
    assert ("ad" in metrics) == (ad_weight > 0)
    if ad_weight:
        assert 0.0 <= float(metrics["ad"]) <= 1.0


# ----------------------------------------------------------------------------- AD gradient


def reference_ad_term(model, vae_params, x, eps, lam, *, stop_alpha=False):
    """lambda * mean L_AD written independently: hand-written head, Grad-CAM via jacrev."""
    enc = model.apply({"params": vae_params}, x, method="encode")
    a = enc["conv2"]  # (B, h, w, c)
    p = vae_params["encoder"]

    def head(a1, e1):  # one sample: (h, w, c), (D,) -> z (D,)
        h = jax.nn.relu(a1.reshape(-1) @ p["fc1"]["kernel"] + p["fc1"]["bias"])
        s = h @ p["fc_latent"]["kernel"] + p["fc_latent"]["bias"]
        mu, logvar = s[:D], s[D:]
        return mu + e1 * jnp.exp(0.5 * logvar)

    jac = jax.vmap(jax.jacrev(head))(a, eps)  # (B, D, h, w, c)
    alpha = jac.mean(axis=(2, 3))  # (B, D, c)
    if stop_alpha:
        alpha = jax.lax.stop_gradient(alpha)
    maps = jax.nn.relu(jnp.einsum("bdc,bhwc->bdhw", alpha, a))
    order = jnp.argsort(-jax.lax.stop_gradient(maps.sum(axis=(2, 3))), axis=1)
    rows = jnp.arange(x.shape[0])
    m1, m2 = maps[rows, order[:, 0]], maps[rows, order[:, 1]]
    lad = 2 * jnp.sum(jnp.minimum(m1, m2), axis=(1, 2)) / (jnp.sum(m1 + m2, axis=(1, 2)) + 1e-8)
    return lam * jnp.mean(lad)


def test_ad_gradient_flows_through_attention(setup):
    model, disc, params, batch = setup
    lam = 3.0
    common = dict(gamma=10.0, ad_layer="conv2", ad_dense_after="fc1", ad_score="sample")
    plain = dis.factor_vae_loss_fn(model, disc, **common)
    ad = dis.factor_vae_loss_fn(model, disc, ad_weight=lam, **common)
    key = jax.random.key(7)
    g_plain, m_plain = jax.jit(jax.grad(plain, has_aux=True))(params, batch, key)
    g_ad, m_ad = jax.jit(jax.grad(ad, has_aux=True))(params, batch, key)
    for k in ("recon", "kl", "tc", "disc_loss"):  # same forward pass
        np.testing.assert_allclose(m_ad[k], m_plain[k], rtol=1e-5)

    k_z = jax.random.split(key, 4)[0]  # the loss draws eps from the first split key
    eps = jax.random.normal(k_z, (batch["image"].shape[0], D))
    x = batch["image"]
    np.testing.assert_allclose(
        m_ad["ad"] * lam, reference_ad_term(model, params["vae"], x, eps, lam), rtol=1e-5
    )
    g_ref = jax.jit(jax.grad(lambda p: reference_ad_term(model, p, x, eps, lam)))(params["vae"])
    diff = jax.tree.map(jnp.subtract, g_ad["vae"], g_plain["vae"])
    for path, d_leaf in jax.tree_util.tree_leaves_with_path(diff):
        want = _get(g_ref, path)
        scale = float(jnp.max(jnp.abs(want))) + 1e-12
        np.testing.assert_allclose(d_leaf / scale, want / scale, atol=2e-4, err_msg=str(path))
    # the attention gradient reaches the conv stack, the head and the latent layer
    enc = g_ref["encoder"]
    for name in ("conv1", "conv2", "fc1", "fc_latent"):
        assert float(jnp.max(jnp.abs(jax.tree.leaves(enc[name])[0]))) > 0, name
    assert all(float(jnp.max(jnp.abs(v))) == 0 for v in jax.tree.leaves(diff["decoder"]))
    # the discriminator's gradient is untouched by L_AD
    for a, b in zip(jax.tree.leaves(g_ad["disc"]), jax.tree.leaves(g_plain["disc"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # the test is sensitive to the second-order path: freezing alpha changes the gradient
    g_frozen = jax.jit(
        jax.grad(lambda p: reference_ad_term(model, p, x, eps, lam, stop_alpha=True))
    )(params["vae"])
    fc_diff = g_frozen["encoder"]["fc1"]["kernel"] - g_ref["encoder"]["fc1"]["kernel"]
    assert float(jnp.max(jnp.abs(fc_diff))) > 1e-3 * float(
        jnp.max(jnp.abs(g_ref["encoder"]["fc1"]["kernel"]))
    )


def _get(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def test_bad_config_raises(setup):
    model, disc, _, _ = setup
    with pytest.raises(ValueError, match="ad_pair"):
        dis.factor_vae_loss_fn(model, disc, ad_weight=1.0, ad_pair="top")
    with pytest.raises(ValueError, match=">= 0"):
        dis.factor_vae_loss_fn(model, disc, gamma=-1.0)
    with pytest.raises(ValueError, match="ad_score"):
        dis.factor_vae_loss_fn(model, disc, ad_score="z")


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    import jax, numpy as np
    assert len(jax.devices()) == 2, jax.devices()
    from test_factor_vae import tiny_vae, tiny_disc, D
    from vae_xai import disentangle as dis
    from vae_xai.models.factor_vae import init_factor_vae
    from vae_xai.sharding import make_mesh, shard_batch
    from vae_xai.train import create_state, jit_step, replicated
    rng = np.random.default_rng(1)
    batch = {{k: (rng.random((6, 16, 16, 1)) > 0.7).astype(np.float32)
             for k in ("image", "image_disc")}}
    results = []
    for n in (2, 1):
        model, disc = tiny_vae(), tiny_disc()
        params = init_factor_vae(jax.random.key(0), model, disc, input_shape=(16, 16, 1),
                                 latent_dim=D)
        opt = dis.factor_vae_optimizer(vae_lr=1e-3, disc_lr=1e-3)
        update = dis.factor_vae_update_fn(model, disc, opt, gamma=10.0, ad_weight=5.0,
                                          ad_layer="conv2", ad_dense_after="fc1")
        mesh = make_mesh(n)
        step = jit_step(update, mesh)
        state = jax.device_put(create_state(params, opt), replicated(mesh))
        for _ in range(2):
            state, metrics = step(state, shard_batch(batch, mesh))
        results.append((jax.device_get(metrics), jax.tree.leaves(jax.device_get(state.params))))
    (m2, p2), (m1, p1) = results
    for k in m1:
        np.testing.assert_allclose(m2[k], m1[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for a, b in zip(p2, p1):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    print("OK")
    """
)


@pytest.mark.slow
def test_ad_step_on_two_fake_devices_matches_one(tmp_path):
    repo = pathlib.Path(__file__).resolve().parents[1]
    script = tmp_path / "multi.py"
    script.write_text(MULTI_DEVICE_SCRIPT.format(repo=str(repo), tests=str(repo / "tests")))
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_experiment_configs():
    from experiments.configs.dsprites_disentanglement import get_config

    full = get_config("ad_factorvae")
    assert (full.train.num_steps, full.train.batch_size, full.train.gamma) == (300_000, 64, 40.0)
    assert full.ad.weight > 0 and full.ad.layer == "conv4" and full.ad.pair == "attention"
    assert full.eval.factor_vae.num_train == 10_000 and full.eval.factor_vae.num_eval == 5_000
    assert (full.optim.disc_b1, full.optim.disc_b2, full.optim.vae_lr) == (0.5, 0.9, 1e-4)
    assert get_config("factorvae").ad.weight == 0.0
    assert get_config("beta_vae").train.beta == 4.0
    cpu = get_config("factorvae,cpu")
    assert cpu.train.num_steps < 1000 and cpu.eval.factor_vae.num_train < 10_000
    with pytest.raises(ValueError, match="unknown option 'vae'"):
        get_config("vae")
    cpu = get_config("ad_factorvae,cpu_long")
    assert (cpu.variant, cpu.train.num_steps, cpu.train.batch_size) == ("cpu_long", 5_000, 64)
    assert cpu.eval.factor_vae.num_train == 10_000  # standard metric sizes
    with pytest.raises(ValueError, match="valid variants are 'smoke', 'cpu', 'cpu_long', 'full'"):
        get_config("factorvae,tiny")
    with pytest.raises(ValueError, match="choose one variant"):
        get_config("factorvae,cpu,smoke")
