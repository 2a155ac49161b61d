"""SSIM and the reconstruction-residual maps (vae_xai.localization.ssim, ``recon_smooth`` /
``ssim`` / ``ssim_smooth`` of vae_xai.localization.vae_maps) against independent references:
SSIM written out with ``scipy.ndimage.gaussian_filter`` (scikit-image's definition) and a
hand-computed constant-image case; the residual maps against the recon map, NumPy smoothing
and the SSIM of the decoded mean; producers built from config entries."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy import ndimage

from vae_xai.localization import maps as maps_lib
from vae_xai.localization import one_class
from vae_xai.localization import producers as producers_lib
from vae_xai.localization import ssim as ssim_lib
from vae_xai.localization import vae_maps as vm
from vae_xai.models import ConvVAE
from vae_xai.validation import ConfigError


def ssim_scipy(x, y, sigma=1.5, c1=0.01**2, c2=0.03**2):
    """Per-pixel SSIM of (H, W, C) float64 images, channel-averaged, as scikit-image defines it
    with gaussian_weights=True (truncate 3.5: an 11x11 window at sigma 1.5, scipy 'reflect')."""

    def f(a):
        return np.stack(
            [ndimage.gaussian_filter(a[..., c], sigma, truncate=3.5, mode="reflect")
             for c in range(a.shape[-1])], -1,
        )  # fmt: skip

    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.mean(-1)


def test_ssim_matches_the_scipy_reference():
    rng = np.random.default_rng(0)
    x = rng.random((2, 23, 17, 3))
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape), 0, 1)
    got = np.asarray(ssim_lib.ssim_map(x, y))
    assert got.shape == (2, 23, 17)
    for i in range(2):
        np.testing.assert_allclose(got[i], ssim_scipy(x[i], y[i]), atol=2e-5)
    np.testing.assert_allclose(np.asarray(ssim_lib.ssim_residual(x, y)), 1 - got, atol=1e-6)


def test_ssim_of_constant_images_is_the_luminance_term():
    # No variance: SSIM = (2 a b + C1) / (a^2 + b^2 + C1) everywhere (the contrast term is 1).
    a, b = 0.3, 0.7
    x = np.full((1, 12, 12, 1), a)
    y = np.full((1, 12, 12, 1), b)
    c1 = 0.01**2
    np.testing.assert_allclose(
        np.asarray(ssim_lib.ssim_map(x, y)), (2 * a * b + c1) / (a * a + b * b + c1), rtol=1e-4
    )
    np.testing.assert_allclose(np.asarray(ssim_lib.ssim_residual(x, x)), 0.0, atol=1e-6)


def test_gaussian_window_and_bad_input():
    g = ssim_lib.gaussian_window_1d(11, 1.5)
    t = np.arange(11) - 5
    np.testing.assert_allclose(g, np.exp(-(t**2) / 4.5) / np.exp(-(t**2) / 4.5).sum())
    with pytest.raises(ValueError, match="odd"):
        ssim_lib.gaussian_window_1d(10, 1.5)
    with pytest.raises(ValueError, match="sigma"):
        ssim_lib.gaussian_window_1d(11, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        ssim_lib.ssim_map(np.zeros((1, 16, 16, 1)), np.zeros((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="too small"):
        ssim_lib.ssim_map(np.zeros((1, 4, 16, 1)), np.zeros((1, 4, 16, 1)))
    with pytest.raises(ValueError, match="data_range"):
        ssim_lib.ssim_map(np.zeros((1, 16, 16, 1)), np.zeros((1, 16, 16, 1)), data_range=0)


@pytest.fixture(scope="module")
def tiny():
    model = ConvVAE(input_shape=(12, 12, 2), channels=(3,), hidden=6, latent_dim=3)
    x = jax.random.uniform(jax.random.key(1), (5, 12, 12, 2))
    variables = model.init(jax.random.key(0), x)
    return model, variables, np.asarray(x)


EVAL = dict(
    layers=("conv1",),
    references=("prior",),
    maps=("ssim_smooth", "recon_smooth", "ssim"),
    residual=dict(smooth_kernel=5, smooth_sigma=1.0, ssim_window=5, ssim_sigma=1.0),
)


def test_residual_producers_against_references(tiny):
    model, variables, x = tiny
    ctx = maps_lib.Context(
        model=model, variables=variables, train_images=x, test_images=x,
        masks=np.zeros(x.shape[:3], np.float32), labels=np.array([0, 0, 0, 1, 1]),
        batch_size=2, likelihood="bernoulli",
    )  # fmt: skip
    producers = producers_lib.producers_from_config(EVAL)
    names = [p.name for p in producers]
    assert names == ["recon", "center_prior", "attention_prior_conv1",
                     "ssim_smooth", "recon_smooth", "ssim"]  # fmt: skip
    got = {p.name: ctx.map_of(p) for p in producers}
    # recon_smooth: the recon map, smoothed with the zero-padded kernel written out in NumPy
    kernel = vm.gaussian_kernel(5, 1.0).astype(np.float64)
    recon = got["recon"].astype(np.float64)
    padded = np.pad(recon, ((0, 0), (2, 2), (2, 2)))
    expected = np.zeros_like(recon)
    for i in range(12):
        for j in range(12):
            expected[:, i, j] = (padded[:, i : i + 5, j : j + 5] * kernel).sum((1, 2))
    np.testing.assert_allclose(got["recon_smooth"], expected, rtol=1e-4, atol=1e-6)
    # ssim: 1 - SSIM between the images and the decoded mean at z = mu (scipy reference;
    # a 5x5 window at sigma 1 is scipy's truncate=2)
    mean = np.asarray(jax.nn.sigmoid(model.apply(variables, x, None, train=False)["logits"]))
    for i in range(len(x)):
        xi, yi = x[i].astype(np.float64), mean[i].astype(np.float64)

        def f(a):
            return np.stack(
                [ndimage.gaussian_filter(a[..., c], 1.0, truncate=2.0, mode="reflect")
                 for c in range(2)], -1,
            )  # fmt: skip

        mx, my = f(xi), f(yi)
        vx, vy, cxy = f(xi * xi) - mx**2, f(yi * yi) - my**2, f(xi * yi) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        np.testing.assert_allclose(got["ssim"][i], 1 - s.mean(-1), atol=2e-5)
    # ssim_smooth: ssim, smoothed
    np.testing.assert_allclose(
        got["ssim_smooth"],
        np.asarray(vm.smooth_maps(got["ssim"], kernel_size=5, sigma=1.0)),
        rtol=1e-4, atol=1e-6,
    )  # fmt: skip
    # the smoothed maps reuse the kept unsmoothed ones, whose cost they include
    assert ctx.seconds("ssim_smooth") >= ctx.seconds("ssim")
    assert ctx.seconds("recon_smooth") >= ctx.seconds("recon")
    # the unsmoothed l2 residual from encode/decode functions is the recon map
    encode_fn, decode_fn = vm.model_fns(model, variables)
    np.testing.assert_allclose(
        vm.residual_maps(encode_fn, decode_fn, x, batch_size=3), got["recon"], rtol=1e-5,
        atol=1e-7,
    )  # fmt: skip


@pytest.mark.parametrize(
    "change",
    [
        dict(residual=dict(ssim_window=10)),
        dict(residual=dict(smooth_kernel=1)),
        dict(residual=dict(ssim_sigma=0.0)),
        dict(residual=dict(window=11)),
    ],
)
def test_bad_residual_entry_names_the_field(change):
    # checked even when eval.maps names no residual map
    with pytest.raises(ConfigError, match=r"eval\.residual"):
        one_class.from_config({**EVAL, "maps": (), **change})


def test_residual_rejects_an_unknown_kind(tiny):
    model, variables, x = tiny
    encode_fn, decode_fn = vm.model_fns(model, variables)
    with pytest.raises(ValueError, match="residual"):
        vm.reconstruction_residual(encode_fn, decode_fn, x, residual="l1")


def test_a_nan_image_is_named_before_any_map(tiny):
    model, variables, x = tiny
    bad = np.array(x)
    bad[3, 2, 5, 0] = np.nan
    bad[4, 0, 0, 1] = np.inf
    encode_fn, decode_fn = vm.model_fns(model, variables)
    for fn in (
        lambda: vm.residual_maps(encode_fn, decode_fn, bad),
        lambda: maps_lib.intensity_maps(bad),
        lambda: maps_lib.encoder_statistics(model, variables, bad),
    ):
        with pytest.raises(
            ValueError,
            match=r"images hold NaN or inf values in 2 of 5 images \(first indices: 3, 4\)",
        ):
            fn()
