"""Training-step throughput of FactorVAE vs AD-FactorVAE (attention + second-order L_AD).

Same model (Kim & Mnih's dSprites conv VAE + 6x1000 discriminator, random weights), same
rendered dSprites batch, one process. Every variant is a full jitted, donated train step
(:func:`vae_xai.train.jit_step`), warmed up, then timed in ``--rounds`` interleaved rounds of
``--steps`` steps each (interleaving spreads a shared machine's load over all variants); the
median round gives steps/s. Prints one JSON object.

    python benchmarks/ad_factorvae_throughput.py --batch 64

Variants:
  factorvae      recon + KL + gamma * TC, discriminator step (the baseline)
  ad_factorvae   + lambda * L_AD of the top-2 attention pair at conv4, fast Dense path
  ad_generic     same, attention through the generic shift path (no dense_after)
  ad_all_pairs   same as ad_factorvae, L_AD averaged over all D(D-1)/2 pairs
  config:METHOD  the step the Table 3 runs train: ``dsprites_disentanglement.build`` of the
                 ``full`` config of METHOD (beta_vae, factorvae, ad_factorvae; its own batch
                 keys, e.g. the discriminator's independent batch), e.g.
                 ``--variants factorvae,config:factorvae,config:ad_factorvae,config:beta_vae``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax

from data_pipelines.dsprites_gt import make_batch_fn
from experiments.configs.dsprites_disentanglement import get_config
from vae_xai import disentangle as dis
from vae_xai.experiments import dsprites_disentanglement as dd
from vae_xai.models.conv_vae import dsprites_vae
from vae_xai.models.factor_vae import FactorDiscriminator, init_factor_vae
from vae_xai.sharding import make_mesh, shard_batch
from vae_xai.train import create_state, jit_step

VARIANTS = {
    "factorvae": dict(),
    "ad_factorvae": dict(ad_weight=1.0),
    "ad_generic": dict(ad_weight=1.0, ad_dense_after=None),
    "ad_all_pairs": dict(ad_weight=1.0, ad_pair="all"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="steps after compilation")
    parser.add_argument(
        "--variants", default="factorvae,ad_factorvae", help=f"comma list of {list(VARIANTS)}"
    )
    args = parser.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    methods = ("beta_vae", "factorvae", "ad_factorvae")
    unknown = {n for n in names if n not in VARIANTS and n not in {f"config:{m}" for m in methods}}
    if unknown or "factorvae" not in names:
        parser.error(
            f"variants must include factorvae and come from {list(VARIANTS)} or "
            f"config:{{{','.join(methods)}}}; unknown: {sorted(unknown)}"
        )

    model, disc = dsprites_vae(), FactorDiscriminator()
    mesh = make_mesh()
    init = jax.jit(
        lambda k: init_factor_vae(k, model, disc, input_shape=(64, 64, 1), latent_dim=10)
    )
    batch = shard_batch(make_batch_fn(0, args.batch, keys=("image", "image_disc"))(0), mesh)
    optimizer = dis.factor_vae_optimizer()

    steps, states, compile_s = {}, {}, {}
    batches = {}
    for name in names:
        batches[name] = batch
        if name.startswith("config:"):  # the experiment's own step, as the runs train it
            config = get_config(name.split(":", 1)[1])
            _, state, update, keys = dd.build(config, 1)
            batches[name] = shard_batch(make_batch_fn(0, args.batch, keys=keys)(0), mesh)
        else:
            update = dis.factor_vae_update_fn(model, disc, optimizer, gamma=40.0, **VARIANTS[name])
            state = create_state(init(jax.random.key(1)), optimizer)
        steps[name] = jit_step(update, mesh, seed=0)
        t0 = time.perf_counter()
        state, m = steps[name](state, batches[name])
        jax.block_until_ready(m)
        compile_s[name] = time.perf_counter() - t0
        for _ in range(args.warmup):
            state, m = steps[name](state, batches[name])
        jax.block_until_ready(m)
        states[name] = state

    rounds: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            state = states[name]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                state, m = steps[name](state, batches[name])
            jax.block_until_ready((state, m))
            rounds[name].append(args.steps / (time.perf_counter() - t0))
            states[name] = state

    sps = {n: statistics.median(r) for n, r in rounds.items()}
    base = sps["factorvae"]
    print(
        json.dumps(
            {
                "benchmark": "ad_factorvae_throughput",
                "model": "Kim & Mnih dSprites conv VAE (10 latents) + 6x1000 discriminator; "
                "AD at conv4 (4x4x64), top-2 attention pair, lambda=1, gamma=40",
                "batch": args.batch,
                "steps_per_round": args.steps,
                "rounds": args.rounds,
                "device": str(jax.devices()[0].device_kind),
                "platform": jax.default_backend(),
                "num_devices": len(jax.devices()),
                "cpu": platform.processor() or platform.machine(),
                "jax": jax.__version__,
                "steps_per_s": sps,
                "steps_per_s_rounds": rounds,
                "first_call_s (compile + 1 step)": compile_s,
                "time_ratio_to_factorvae": {n: base / v for n, v in sps.items()},
                "ad_overhead": base / sps["ad_factorvae"] - 1.0 if "ad_factorvae" in sps else None,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
