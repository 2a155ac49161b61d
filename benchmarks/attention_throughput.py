"""All-latent attention cost vs one aggregate backward pass and a loop of per-latent vjps.

Same model (the paper's MNIST ConvVAE, random weights), same batch, one process; every variant
is jitted, warmed up, and timed as the median of ``--repeats`` runs. Prints one JSON object.

    python benchmarks/attention_throughput.py --batch 256

Variants (all take the conv2 feature map and produce maps at 7x7, from the same head):
  aggregate_backward   one vjp of sum(mu) (the released code's single backward pass) + map
  per_latent_fast      all D maps, ``split_encoder(..., dense_after="fc1")`` shift path
  per_latent_generic   all D maps, generic shift path (vmapped vjp through the whole head)
  python_loop          D separate jitted single-latent vjps called in a Python loop
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from vae_xai import attention as att
from vae_xai.encoder_split import split_encoder
from vae_xai.models import mnist_vae


def timed(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile + warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--latent_dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    model = mnist_vae(args.latent_dim)
    x = jax.random.uniform(jax.random.key(0), (args.batch, 28, 28, 1))
    variables = model.init(jax.random.key(1), x[:1])
    features = model.apply(variables, x, method="encode")["conv2"]

    def split(a, dense_after=None):
        # split at conv2 with the given features substituted: head_fn only depends on `a`
        s = split_encoder(
            model, variables, x, layer="conv2", method="encode", dense_after=dense_after
        )
        return s

    @jax.jit
    def aggregate(images, a):
        s = split(images)
        grads = jax.grad(lambda f: jnp.sum(s.head_fn(f)[0]))(a)
        alpha = grads.mean(axis=(1, 2))
        return jnp.einsum("bc,bhwc->bhw", alpha, a)

    @jax.jit
    def fast(images, a):
        s = split(images, "fc1")
        return att.latent_attention(s.head_fn, a, shift_head_fn=s.shift_head_fn)

    @jax.jit
    def generic(images, a):
        return att.latent_attention(split(images).head_fn, a)

    @jax.jit
    def one_latent(images, a, i):
        s = split(images)
        _, pullback = jax.vjp(lambda f: s.head_fn(f)[0], a)
        ct = jax.nn.one_hot(jnp.full((a.shape[0],), i), args.latent_dim, dtype=a.dtype)
        (g,) = pullback(ct)
        return jax.nn.relu(jnp.einsum("bc,bhwc->bhw", g.mean(axis=(1, 2)), a))

    def loop():
        return jnp.stack([one_latent(x, features, i) for i in range(args.latent_dim)], axis=1)

    # all variants must agree before they are compared
    ref = fast(x, features)
    assert jnp.allclose(generic(x, features), ref, rtol=1e-4, atol=1e-6)
    assert jnp.allclose(loop(), ref, rtol=1e-4, atol=1e-6)

    t = {
        "aggregate_backward": timed(lambda: aggregate(x, features), args.repeats),
        "per_latent_fast": timed(lambda: fast(x, features), args.repeats),
        "per_latent_generic": timed(lambda: generic(x, features), args.repeats),
        "python_loop": timed(loop, args.repeats),
    }
    agg = t["aggregate_backward"]
    print(
        json.dumps(
            {
                "benchmark": "attention_throughput",
                "model": "mnist ConvVAE (conv 64, conv 128, dense 1024), layer conv2 (7x7x128)",
                "batch": args.batch,
                "latent_dim": args.latent_dim,
                "device": str(jax.devices()[0].device_kind),
                "platform": jax.default_backend(),
                "cpu": platform.processor() or platform.machine(),
                "jax": jax.__version__,
                "seconds_median": t,
                "ratio_to_aggregate_backward": {k: v / agg for k, v in t.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
