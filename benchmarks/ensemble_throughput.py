"""Seed ensembles and several steps per dispatch vs one seed, one step per call.

For the models of ``benchmarks/train_throughput.py`` (default: the dSprites FactorVAE and
AD-FactorVAE of Table 3, and the quickstart beta-VAE), times in interleaved rounds (medians):

* ``sequential``: ``S`` seeds trained one after another (one jitted step each, per step),
  the default today;
* ``ensemble``: the ``S`` seeds as one vmapped step (:mod:`vae_xai.ensemble`);
* ``k_steps``: one seed, ``k`` steps per jitted call (:func:`vae_xai.train.jit_steps`);
* ``single``: one seed, one step per call (the reference for ``k_steps``).

Prints one JSON object with seconds per step (per seed-step for the ensemble) and the ratios
``sequential / ensemble`` and ``single / k_steps`` (> 1: the option is faster). On a 2-core CPU
expect no gain (the step is compute-bound); on a GPU/TPU a small conv VAE leaves most of the
chip idle, which the ensemble fills.

    python benchmarks/ensemble_throughput.py --seeds 4 --k 8 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from train_throughput import make_batch, make_jax  # noqa: E402

from vae_xai import ensemble  # noqa: E402
from vae_xai.sharding import DATA_AXIS, make_mesh, shard_batch  # noqa: E402
from vae_xai.train import create_state, jit_step, jit_steps, with_finite_flags  # noqa: E402


def _bench(name: str, seeds: int, k: int, rounds: int, steps: int) -> dict:
    mesh = make_mesh()
    batches = [make_batch(name, seed) for seed in range(seeds)]
    states, update = [], None
    for seed in range(seeds):
        params, update, opt, variables = make_jax(name, "auto", batches[seed])
        states.append(create_state(params, opt, variables or None))
    step = jit_step(with_finite_flags(update), mesh)
    ens_step = jit_step(with_finite_flags(ensemble.ensemble_update_fn(update, range(seeds))), mesh)
    block = jit_steps(with_finite_flags(update), mesh, 0, k)

    seq_states = [jax.tree.map(lambda x: x.copy(), s) for s in states]
    seq_batches = [shard_batch(b, mesh) for b in batches]
    ens_state = ensemble.stack(states)
    ens_batch = shard_batch(
        ensemble.ensemble_batch_fn([lambda s, b=b: b for b in batches])(0), mesh
    )
    one_state = jax.tree.map(lambda x: x.copy(), states[0])
    blk_state = jax.tree.map(lambda x: x.copy(), states[0])
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, DATA_AXIS))
    blk_batch = jax.device_put(jax.tree.map(lambda x: np.stack([x] * k), batches[0]), sharding)

    def run_sequential(n):
        nonlocal seq_states
        for _ in range(n):
            for i in range(seeds):
                seq_states[i], _ = step(seq_states[i], seq_batches[i])
        jax.block_until_ready(seq_states)

    def run_ensemble(n):
        nonlocal ens_state
        for _ in range(n):
            ens_state, _ = ens_step(ens_state, ens_batch)
        jax.block_until_ready(ens_state)

    def run_single(n):
        nonlocal one_state
        for _ in range(n * k):
            one_state, _ = step(one_state, seq_batches[0])
        jax.block_until_ready(one_state)

    def run_block(n):
        nonlocal blk_state
        for _ in range(n):
            blk_state, _ = block(blk_state, blk_batch)
        jax.block_until_ready(blk_state)

    variants = {
        "sequential": (run_sequential, steps * seeds),  # seed-steps per round
        "ensemble": (run_ensemble, steps * seeds),
        "single": (run_single, steps * k),
        "k_steps": (run_block, steps * k),
    }
    first = {}
    for v, (fn, _) in variants.items():  # compile + warm up
        t0 = time.perf_counter()
        fn(1)
        first[v] = time.perf_counter() - t0
        fn(1)  # the second call sees committed, donated inputs: compiled again if that differs
    times = {v: [] for v in variants}
    for _ in range(rounds):
        for v, (fn, count) in variants.items():
            t0 = time.perf_counter()
            fn(steps)
            times[v].append((time.perf_counter() - t0) / count)
    med = {v: statistics.median(t) for v, t in times.items()}
    return {
        "seeds": seeds,
        "k": k,
        "s_per_seed_step": med,
        "ratios": {
            "sequential_over_ensemble": med["sequential"] / med["ensemble"],
            "single_over_k_steps": med["single"] / med["k_steps"],
            "ensemble_step_over_one_seed_step": med["ensemble"] * seeds / med["single"],
        },
        "s_per_seed_step_rounds": times,
        "first_call_s (compile + 1 round)": first,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="factorvae,ad_factorvae,quickstart")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--k", type=int, default=8, help="steps per dispatch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="ensemble steps per timed round")
    args = parser.parse_args()
    out = {
        "benchmark": "ensemble_throughput",
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "num_devices": jax.device_count(),
        "cpu": platform.machine(),
        "jax": jax.__version__,
        "rounds": args.rounds,
        "models": {},
    }
    for name in args.models.split(","):
        out["models"][name] = _bench(name, args.seeds, args.k, args.rounds, args.steps)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
