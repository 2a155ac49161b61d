"""One dSprites Table 3 run with the convolutions forced to one implementation.

Separates ``vae_xai.fast_conv``'s float rounding from other code changes when a short-run
disentanglement score moves (RESULTS.md, regenerated headline numbers):

    python benchmarks/dsprites_conv_impl.py --impl=xla --workdir=/tmp/fvae_xla \
        --config=factorvae,cpu --seeds=0

Prints the run's summary (FactorVAE / beta-VAE score, MIG, attention overlap) as JSON.
"""

from __future__ import annotations

import argparse
import json

from experiments.configs.dsprites_disentanglement import get_config
from vae_xai.experiments import dsprites_disentanglement as dd
from vae_xai.models.conv_vae import dsprites_vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("xla", "fast", "auto"), default="xla")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--config", default="factorvae,cpu", help="dSprites config argument")
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    dd.dsprites_vae = lambda latent_dim: dsprites_vae(latent_dim, conv_impl=args.impl)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = dd.train_and_evaluate(get_config(args.config), args.workdir, seeds=seeds)
    print(json.dumps({"impl": args.impl, "config": args.config, "summary": out["summary"]}))


if __name__ == "__main__":
    main()
