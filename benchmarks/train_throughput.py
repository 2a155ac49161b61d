"""Training-step throughput of every model we ship, against the same model in PyTorch.

For each model, the full jitted, donated training step that our launchers run
(:func:`vae_xai.train.jit_step` over :func:`vae_xai.train.vae_update_fn` or
:func:`vae_xai.disentangle.factor_vae_update_fn`, with the on-device finiteness flags that
:func:`vae_xai.train.fit` adds) is timed with the convolutions as
``conv_impl="xla"`` (plain Flax layers: what every model ran before issue 9) and ``"fast"``
(:mod:`vae_xai.fast_conv`, the CPU default), and, when ``torch`` is installed (optional:
``pip install torch``), the PyTorch twin of the same architecture, loss and optimizer from
``benchmarks/torch_twins/`` (``benchmarks/test_torch_parity.py`` checks the twins compute
the same loss and gradients from the same weights). All variants start from the same weights
and batch, are warmed up, then timed in ``--rounds`` interleaved rounds of ``--steps`` steps
(interleaving spreads a shared machine's load over all variants); the median round gives the
time per step. Prints one JSON object; ratios > 1 mean slower than the reference named.

    python benchmarks/train_throughput.py                 # all models, JAX and (if present) torch
    python benchmarks/train_throughput.py --models quickstart,mnist_vae --rounds 7

Models (batch = the launcher's config): ``quickstart`` (beta-VAE, Kim & Mnih dSprites conv VAE,
64), ``mnist_vae`` (the paper's one-class MNIST VAE, 128), ``factorvae`` and ``ad_factorvae``
(dSprites VAE + 6x1000 discriminator, 64 + 64; AD: L_AD of the top-2 attention pair at conv4),
``resnet_small`` (MVTec ``small``: 128 px ResNet18-encoder VAE, width 16, BatchNorm, 16; no
augmentation on either side), ``ucsd`` (UCSD Ped1 ``small``: 100 px, 32).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines.dsprites_gt import make_batch_fn
from vae_xai import disentangle as dis
from vae_xai.models.conv_vae import dsprites_vae, mnist_vae
from vae_xai.models.factor_vae import FactorDiscriminator, init_factor_vae
from vae_xai.models.resnet_vae import ResNetVAE
from vae_xai.models.ucsd_vae import UCSDVAE
from vae_xai.sharding import make_mesh, shard_batch
from vae_xai.train import create_state, jit_step, vae_update_fn, with_finite_flags

MODELS = ("quickstart", "mnist_vae", "factorvae", "ad_factorvae", "resnet_small", "ucsd")
IMPLS = ("xla", "fast")


def _binary(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.random(shape) > 0.5).astype(np.float32)


def make_jax(name: str, impl: str, batch: dict[str, np.ndarray], params: Any = None):
    """``(model, params, update_fn, optimizer, model_state)`` of one model, as its launcher."""
    if name in ("quickstart", "mnist_vae"):
        model = dsprites_vae(conv_impl=impl) if name == "quickstart" else mnist_vae(conv_impl=impl)
        lr, beta = (5e-4, 4.0) if name == "quickstart" else (1e-3, 1.0)
        opt = optax.adam(lr)
        update = vae_update_fn(model, opt, beta=beta)
        init = lambda k: model.init(k, jnp.asarray(batch["image"][:1]))  # noqa: E731
    elif name in ("factorvae", "ad_factorvae"):
        model, disc = dsprites_vae(conv_impl=impl), FactorDiscriminator()
        opt = dis.factor_vae_optimizer()
        kw = dict(ad_weight=1.0) if name == "ad_factorvae" else {}
        update = dis.factor_vae_update_fn(model, disc, opt, gamma=40.0, **kw)
        init = lambda k: {  # noqa: E731
            "params": init_factor_vae(k, model, disc, input_shape=(64, 64, 1), latent_dim=10)
        }
    elif name == "resnet_small":
        model = ResNetVAE(
            image_size=128, in_channels=3, width=16, latent_dim=32, padding="reflect",
            conv_impl=impl,
        )  # fmt: skip
        opt = optax.adam(1e-3)
        update = vae_update_fn(model, opt, likelihood="gaussian", variance=0.05)
        init = lambda k: model.init(k, jnp.asarray(batch["image"][:1]))  # noqa: E731
    elif name == "ucsd":
        model = UCSDVAE(conv_impl=impl)
        opt = optax.adam(1e-3)
        update = vae_update_fn(model, opt, likelihood="gaussian", variance=0.5)
        init = lambda k: model.init(k, jnp.asarray(batch["image"][:1]))  # noqa: E731
    else:
        raise ValueError(f"unknown model {name!r}; choose from {MODELS}")
    variables = dict(jax.jit(init)(jax.random.key(1)))
    p = variables.pop("params") if params is None else params
    return p, update, opt, variables


def make_batch(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "quickstart":
        return {"image": np.asarray(make_batch_fn(seed, 64, keys=("image",))(0)["image"])}
    if name in ("factorvae", "ad_factorvae"):
        b = make_batch_fn(seed, 64, keys=("image", "image_disc"))(0)
        return {k: np.asarray(v) for k, v in b.items()}
    if name == "mnist_vae":
        return {"image": _binary(rng, (128, 28, 28, 1))}
    if name == "resnet_small":
        return {"image": rng.random((16, 128, 128, 3), dtype=np.float32)}
    if name == "ucsd":
        return {"image": rng.random((32, 100, 100, 1), dtype=np.float32)}
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


def _load_torch_twins():
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import torch_twins

    return torch_twins


def _time(fn: Callable[[], Any], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {MODELS}")
    parser.add_argument("--impls", default=",".join(IMPLS), help="comma list of xla,fast")
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="steps after compilation")
    parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch twins")
    args = parser.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    impls = [m.strip() for m in args.impls.split(",") if m.strip()]
    if bad := (set(names) - set(MODELS)) | (set(impls) - set(IMPLS)):
        parser.error(f"unknown models/impls {sorted(bad)}; models {MODELS}, impls {IMPLS}")
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--steps and --rounds must be >= 1 and --warmup >= 0")
    torch_twins = None if args.no_torch else _load_torch_twins()
    mesh = make_mesh()

    runners: dict[str, dict[str, Callable[[], Any]]] = {}
    first_call: dict[str, dict[str, float]] = {}
    for name in names:
        batch = make_batch(name)
        runners[name], first_call[name] = {}, {}
        params = None  # host copy: every impl (and torch) starts from the same weights
        for impl in impls:
            params_i, update, opt, variables = make_jax(name, impl, batch, params)
            params = jax.device_get(params_i)
            step = jit_step(with_finite_flags(update), mesh, seed=0)  # as train.fit runs it
            fresh = jax.tree.map(jnp.asarray, (params, jax.device_get(variables)))
            holder = {"state": create_state(fresh[0], opt, fresh[1] or None)}
            sharded = shard_batch(batch, mesh)

            def run(step=step, holder=holder, sharded=sharded):
                holder["state"], metrics = step(holder["state"], sharded)
                return metrics

            t0 = time.perf_counter()
            jax.block_until_ready(run())
            first_call[name][impl] = time.perf_counter() - t0
            for _ in range(args.warmup):
                jax.block_until_ready(run())
            runners[name][f"jax_{impl}"] = run
        if torch_twins is not None:
            tstep = torch_twins.build(name, batch, flax_params=jax.device_get(params))
            t0 = time.perf_counter()
            tstep.step()
            first_call[name]["torch"] = time.perf_counter() - t0
            for _ in range(args.warmup):
                tstep.step()
            runners[name]["torch"] = tstep.step

    rounds: dict[str, dict[str, list[float]]] = {n: {v: [] for v in runners[n]} for n in names}
    for _ in range(args.rounds):
        for name in names:
            for variant, fn in runners[name].items():
                rounds[name][variant].append(_time(fn, args.steps))

    results: dict[str, Any] = {}
    for name in names:
        med = {v: statistics.median(r) for v, r in rounds[name].items()}
        ratios = {}
        if "jax_xla" in med and "jax_fast" in med:
            ratios["xla_over_fast (speedup)"] = med["jax_xla"] / med["jax_fast"]
        if "torch" in med:
            for impl in impls:
                ratios[f"jax_{impl}_over_torch"] = med[f"jax_{impl}"] / med["torch"]
        results[name] = {
            "s_per_step": med,
            "ratios": ratios,
            "s_per_step_rounds": rounds[name],
            "first_call_s (compile + 1 step)": first_call[name],
        }
    info: dict[str, Any] = {
        "benchmark": "train_throughput",
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "num_devices": len(jax.devices()),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
    }
    if torch_twins is not None:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    else:
        info["torch"] = None if args.no_torch else "not installed (pip install torch)"
    print(json.dumps({**info, "models": results}, indent=2))


if __name__ == "__main__":
    main()
