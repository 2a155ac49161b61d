"""The one per-latent KL to N(0, 1) (vae_xai.losses.kl_per_latent) and its users."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy import integrate, stats

from vae_xai import disentangle as dis
from vae_xai import losses


def kl_by_quadrature(mu: float, var: float) -> float:
    """KL(N(mu, var) || N(0, 1)) = int p log(p / q), numerically (independent of the formula)."""
    p = stats.norm(mu, np.sqrt(var))
    q = stats.norm(0.0, 1.0)
    lo, hi = mu - 12 * np.sqrt(var), mu + 12 * np.sqrt(var)
    return integrate.quad(lambda z: p.pdf(z) * (p.logpdf(z) - q.logpdf(z)), lo, hi)[0]


def test_kl_per_latent_against_quadrature_and_hand_cases():
    mu = np.array([[0.0, 1.0, -2.0], [0.5, 0.0, 3.0]], np.float32)
    logvar = np.array([[0.0, 0.0, np.log(0.25)], [np.log(2.0), -1.0, 1.5]], np.float32)
    got = np.asarray(losses.kl_per_latent(mu, logvar))
    assert got.shape == (2, 3)
    want = np.vectorize(kl_by_quadrature)(mu.astype(np.float64), np.exp(logvar.astype(np.float64)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # hand cases: the prior itself is 0; a unit shift of the mean costs 1/2
    assert got[0, 0] == 0.0 and abs(got[0, 1] - 0.5) < 1e-7


def test_users_of_the_per_latent_kl_agree():
    rng = np.random.default_rng(0)
    mu = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    logvar = jnp.asarray(rng.normal(size=(4, 6)), jnp.float32)
    per = losses.kl_per_latent(mu, logvar)
    np.testing.assert_array_equal(losses.gaussian_kl(mu, logvar), jnp.sum(per, axis=-1))
    np.testing.assert_array_equal(dis.pair_scores(None, mu, logvar, method="kl"), per)
