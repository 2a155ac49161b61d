"""ResNet18-encoder VAE: shapes, attention at every stage vs a jacrev reference, BatchNorm modes,
one-step training, and BatchNorm statistics over the global batch on several (fake) devices."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from data_pipelines.augment import augment_batch
from vae_xai import attention as att
from vae_xai.encoder_split import split_encoder
from vae_xai.localization import variables_of
from vae_xai.models.resnet_vae import STAGE_NAMES, ResNetStage, ResNetVAE, dense_after
from vae_xai.sharding import make_mesh
from vae_xai.train import init_state, jit_step, vae_update_fn

TOL = dict(rtol=2e-4, atol=2e-5)


def tiny_model(**kw) -> ResNetVAE:
    return ResNetVAE(
        **{"image_size": 32, "width": 4, "stage_sizes": (1, 1, 1, 1), "latent_dim": 6, **kw}
    )


def _perturb(variables, seed: int):
    """Random params (BN scales included) and non-trivial running stats, so eval-mode BN and
    every block matter in the reference comparison (NumPy RNG: no per-shape compiles)."""
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda p: np.asarray(p) + 0.3 * rng.normal(size=p.shape).astype(np.float32),
        variables["params"],
    )

    def stats(path, v):
        if path[-1].key == "mean":
            return 0.1 * rng.normal(size=v.shape).astype(np.float32)
        return rng.uniform(0.5, 1.5, size=v.shape).astype(np.float32)

    batch_stats = jax.tree_util.tree_map_with_path(stats, variables["batch_stats"])
    return {"params": params, "batch_stats": batch_stats}


def _init(model, x):
    return jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model()
    x = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
    return model, _perturb(_init(model, x), 2), x


def test_paper_setting_shapes():
    """256x256 RGB, w=64, ResNet18 stages, latent 32: every named intermediate's shape."""
    model = ResNetVAE()
    x = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x, jax.random.key(1)), variables, x)
    want = {
        "stem": (2, 64, 64, 64),
        "stage1": (2, 64, 64, 64),
        "stage2": (2, 32, 32, 128),
        "stage3": (2, 16, 16, 256),
        "stage4": (2, 8, 8, 512),
        "mu": (2, 32),
        "logvar": (2, 32),
        "z": (2, 32),
        "logits": (2, 256, 256, 3),
    }
    assert {k: v.shape for k, v in out.items()} == want
    enc = variables["params"]["encoder"]
    conv_params = sum(
        int(np.prod(v.shape))
        for k, sub in enc.items()
        if k != "fc_latent"
        for v in jax.tree.leaves(sub)
    )
    # torchvision resnet18 without fc: 11,176,512 params (conv + BN affine)
    assert conv_params == 11_176_512
    assert enc["fc_latent"]["kernel"].shape == (8 * 8 * 512, 64)


def test_tiny_shapes_and_errors(tiny):
    model, variables, x = tiny
    out = model.apply(variables, x)
    assert out["stage4"].shape == (3, 1, 1, 32)
    assert out["logits"].shape == x.shape
    np.testing.assert_array_equal(out["z"], out["mu"])  # no key: z = mu
    with pytest.raises(ValueError, match="expected input"):
        model.apply(variables, x[:, :16])
    with pytest.raises(ValueError, match="divisible by 32"):
        ResNetVAE(image_size=48).init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


def reference_head(model: ResNetVAE, variables, layer: str):
    """``A -> (mu, logvar)`` rebuilt from stand-alone stage modules and an explicit matmul."""
    p, bs = variables["params"]["encoder"], variables["batch_stats"]["encoder"]
    first = STAGE_NAMES.index(layer) + 1

    def head(a):
        h = a
        for i in range(first, len(STAGE_NAMES)):
            name, si = STAGE_NAMES[i], i - 1
            stage = ResNetStage(
                model.width * 2**si, num_blocks=model.stage_sizes[si], strides=1 if si == 0 else 2
            )
            h = stage.apply({"params": p[name], "batch_stats": bs[name]}, h, train=False)
        stats = h.reshape(h.shape[0], -1) @ p["fc_latent"]["kernel"] + p["fc_latent"]["bias"]
        return jnp.split(stats, 2, axis=-1)

    return head


def reference_gradcam(head, features, score):
    jac = jax.jacrev(lambda a: score(*head(a)))(features)  # (B, D, B, h, w, c)
    per_sample = jnp.stack([jac[i, :, i] for i in range(features.shape[0])])
    alpha = per_sample.mean(axis=(2, 3))
    return jax.nn.relu(jnp.einsum("bdc,bhwc->bdhw", alpha, features))


@pytest.mark.parametrize("layer", STAGE_NAMES)
def test_attention_matches_jacrev_reference(tiny, layer):
    model, variables, x = tiny
    split = split_encoder(
        model, variables, x, layer=layer, method="encode", dense_after=dense_after(layer)
    )
    enc = jax.jit(lambda v, x: model.apply(v, x, method="encode"))(variables, x)
    np.testing.assert_allclose(split.features, enc[layer], **TOL)
    head = reference_head(model, variables, layer)
    mu, logvar = jax.jit(head)(enc[layer])
    np.testing.assert_allclose(mu, enc["mu"], **TOL)
    np.testing.assert_allclose(logvar, enc["logvar"], **TOL)

    got = jax.jit(lambda: att.latent_attention(**split.attention_kwargs()))()
    want = jax.jit(lambda a: reference_gradcam(head, a, lambda mu, lv: mu))(enc[layer])
    assert got.shape == (3, 6) + enc[layer].shape[1:3]
    np.testing.assert_allclose(got, want, **TOL)
    assert float(jnp.max(got)) > 0

    # anomaly attention with the deterministic mean score ref_mu - mu (Eq. 5 without noise)
    ref_mu = jnp.linspace(-1, 1, 6)
    got = jax.jit(
        lambda: att.anomaly_attention(**split.attention_kwargs(), ref_mu=ref_mu, sample=False)
    )()
    want = jax.jit(lambda a: reference_gradcam(head, a, lambda mu, lv: ref_mu - mu))(enc[layer])
    np.testing.assert_allclose(got, want, **TOL)


def test_stage4_fast_path_is_used(tiny):
    model, variables, x = tiny
    assert dense_after("stage4") == "fc_latent" and dense_after("stage3") is None
    assert dense_after("stage4", head="pool") is None
    split = split_encoder(
        model, variables, x, layer="stage4", method="encode", dense_after="fc_latent"
    )
    assert split.shift_head_fn is not None
    slow = att.latent_attention(split.head_fn, split.features)
    np.testing.assert_allclose(att.latent_attention(**split.attention_kwargs()), slow, **TOL)


def test_pool_head_attention(tiny):
    _, _, x = tiny
    model = tiny_model(head="pool")
    variables = _perturb(_init(model, x), 3)
    split = split_encoder(model, variables, x, layer="stage3", method="encode")
    assert variables["params"]["encoder"]["fc_latent"]["kernel"].shape == (32, 12)
    maps = att.latent_attention(**split.attention_kwargs())
    assert maps.shape == (3, 6, 2, 2) and bool(jnp.all(jnp.isfinite(maps)))


def test_batchnorm_train_vs_eval(tiny):
    model, variables, x = tiny
    other = jnp.concatenate([x[:1], 1.0 - x[1:]])  # same first example, different batch
    # eval mode: per-example, independent of the rest of the batch
    e1 = model.apply(variables, x, method="encode")["mu"]
    e2 = model.apply(variables, other, method="encode")["mu"]
    np.testing.assert_allclose(e1[0], e2[0], **TOL)
    # train mode: batch statistics, so example 0 depends on the batch
    t1, upd = model.apply(variables, x, method="encode", train=True, mutable=["batch_stats"])
    t2, _ = model.apply(variables, other, method="encode", train=True, mutable=["batch_stats"])
    assert float(jnp.max(jnp.abs(t1["mu"][0] - t2["mu"][0]))) > 1e-3
    assert float(jnp.max(jnp.abs(t1["mu"][0] - e1[0]))) > 1e-3
    # running averages: new = momentum * old + (1 - momentum) * batch mean (stem BN)
    stem = variables["params"]["encoder"]["stem"]["conv"]
    conv = nn.Conv(4, (7, 7), strides=(2, 2), padding=3, use_bias=False)
    y = conv.apply({"params": stem}, x)
    old = variables["batch_stats"]["encoder"]["stem"]["bn"]
    new = upd["batch_stats"]["encoder"]["stem"]["bn"]
    np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * y.mean((0, 1, 2)), **TOL)
    np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * y.var((0, 1, 2)), **TOL)
    # the eval-mode call does not need (or change) mutable state
    assert "batch_stats" not in model.apply(variables, x, method="encode")


def _augment(key, images):
    return augment_batch(key, images, max_rotation_deg=15.0)


def test_one_step_train_smoke():
    model = tiny_model()
    optimizer = optax.adam(1e-3)
    state = init_state(model, optimizer, (32, 32, 3), seed=0)
    before = jax.tree.map(np.asarray, variables_of(state))
    step = jit_step(
        vae_update_fn(model, optimizer, likelihood="gaussian", augment=_augment), make_mesh(1)
    )
    x = np.asarray(jax.random.uniform(jax.random.key(5), (4, 32, 32, 3)))
    state, m = step(state, {"image": x})
    assert int(state.step) == 1
    assert all(np.isfinite(float(v)) for v in m.values()) and float(m["recon"]) > 0
    after = variables_of(state)
    for coll in ("params", "batch_stats"):
        diffs = jax.tree.leaves(
            jax.tree.map(
                lambda a, b: float(np.max(np.abs(np.asarray(a) - b))), after[coll], before[coll]
            )
        )
        assert max(diffs) > 0, coll


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np, optax
    from vae_xai.models.resnet_vae import ResNetVAE
    from vae_xai.sharding import make_mesh, shard_batch
    from vae_xai.train import init_state, jit_step, vae_update_fn

    assert jax.device_count() == 4, jax.devices()
    model = ResNetVAE(image_size=32, width=4, stage_sizes=(1, 1, 1, 1), latent_dim=6)
    opt = optax.sgd(0.1)
    update = vae_update_fn(model, opt, likelihood="gaussian")
    x = np.asarray(jax.random.uniform(jax.random.key(0), (8, 32, 32, 3)))
    init = jax.tree.map(np.asarray, init_state(model, opt, (32, 32, 3), seed=0))
    results = []
    for n in (4, 1):
        mesh = make_mesh(n)
        state = jax.tree.map(jax.numpy.asarray, init)
        state, metrics = jit_step(update, mesh)(state, shard_batch({"image": x}, mesh))
        results.append(jax.tree.map(np.asarray, (state.params, state.model_state, metrics)))
    flat4, flat1 = (jax.tree.leaves(r) for r in results)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(flat4, flat1))
    for a, b in zip(flat4, flat1):  # equal up to the summation order of the sharded batch
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    # negative control: per-shard statistics (BN local to each device) would differ a lot
    variables = {"params": init.params, **init.model_state}
    encode = jax.jit(
        lambda v, x: model.apply(v, x, method="encode", train=True, mutable=["batch_stats"])[1]
    )
    local = [encode(variables, x[i : i + 2]) for i in range(0, 8, 2)]
    local = jax.tree.map(lambda *a: np.mean(np.stack(a), 0), *local)
    gaps = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))),
        results[0][1]["batch_stats"]["encoder"],
        local["batch_stats"]["encoder"],
    )
    gap = max(jax.tree.leaves(gaps))
    assert gap > 5e-3, gap
    print("OK", len(flat4), worst, gap)
    """
)


@pytest.mark.slow
def test_batchnorm_global_batch_on_four_devices():
    """Sharded over 4 devices, BatchNorm uses the global batch: same step as on 1 device."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK"), proc.stdout


@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_padding_mode_border_behaviour(padding):
    """A constant image gives border-free, constant feature maps only with reflect padding."""
    from vae_xai.models.resnet_vae import ResNetVAE

    model = ResNetVAE(
        image_size=64, width=4, stage_sizes=(1, 1, 1, 1), latent_dim=4, padding=padding
    )
    x = jnp.full((1, 64, 64, 3), 0.7)
    variables = model.init(jax.random.key(0), x)
    # non-trivial BN statistics so that zero padding is not mapped back to the interior value
    variables = jax.tree.map(lambda a: a + 0.1, variables)
    out = model.apply(variables, x, method="encode")
    for name in ("stem", "stage1", "stage2"):
        fmap = out[name][0]
        spread = float(jnp.max(jnp.abs(fmap - fmap[fmap.shape[0] // 2, fmap.shape[1] // 2])))
        if padding == "reflect":
            assert spread < 1e-5, (name, spread)
        else:
            assert spread > 1e-3, (name, spread)
