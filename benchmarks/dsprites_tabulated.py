"""dSprites metrics scored directly and from a table of all 737,280 encoded images, side by side.

Checks that ``eval.tabulate`` (:mod:`vae_xai.metrics.disentanglement.tabulated`) gives the
same scores as encoding every draw, at the standard sizes and on a trained model, and
measures both costs in one process (one core: run it with ``taskset -c N``):

    python benchmarks/dsprites_tabulated.py --config=factorvae \
        --run_dir=WORKDIR/seed_0 --step=20000 [--metrics=factor_vae,beta_vae]

Without ``--run_dir`` the model keeps its initial weights (the scores are then near chance,
the comparison still holds). Prints one JSON object: per metric the direct and tabulated
results, whether they are equal (every entry of the result, bit for bit), the largest
difference of any number in them, and the seconds of each; the table's build time is
reported once and counted in the tabulated total.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from data_pipelines.dsprites_gt import DSpritesGroundTruth
from experiments.configs.dsprites_disentanglement import get_config
from vae_xai import disentangle as dis
from vae_xai.experiments import dsprites_disentanglement as dd
from vae_xai.metric_writer import flatten_numbers
from vae_xai.metrics import disentanglement as metrics
from vae_xai.metrics.disentanglement import tabulated
from vae_xai.train import restore_params

METRICS = {
    "factor_vae": metrics.factor_vae_score,
    "beta_vae": metrics.beta_vae_score,
    "mig": metrics.mig,
}


def _max_diff(a, b) -> float:
    da, db = flatten_numbers(a), flatten_numbers(b)
    if da.keys() != db.keys():
        return float("inf")
    return max((abs(da[k] - db[k]) for k in da), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="factorvae", help="dSprites config argument")
    parser.add_argument("--run_dir", default=None, help="one seed's workdir (checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics", default="factor_vae,beta_vae")
    args = parser.parse_args()

    config = get_config(args.config)
    model, state, _, _ = dd.build(config, args.seed)
    if args.run_dir:
        state = restore_params(args.run_dir, state, step=args.step)
    rep = dis.representation_fn(model, dd.vae_params_of(state))
    gt = DSpritesGroundTruth()
    names = args.metrics.split(",")
    batches = {int(config.eval[n].batch_size) for n in names}

    t = time.perf_counter()
    tables = {b: tabulated.tabulate(gt, rep, batch_size=b, progress=False) for b in batches}
    table_s = time.perf_counter() - t

    out: dict = {"config": args.config, "run_dir": args.run_dir, "step": args.step,
                 "seed": args.seed, "table_s": table_s, "metrics": {}}  # fmt: skip
    for name in names:
        kwargs = dict(config.eval[name])
        table_gt, table_fn = tables[int(kwargs["batch_size"])]
        seed = config.eval.seed_offset + args.seed
        t = time.perf_counter()
        direct = METRICS[name](gt, rep, np.random.default_rng(seed), **kwargs)
        direct_s = time.perf_counter() - t
        t = time.perf_counter()
        table = METRICS[name](table_gt, table_fn, np.random.default_rng(seed), **kwargs)
        table_metric_s = time.perf_counter() - t
        out["metrics"][name] = {
            "equal": direct == table,
            "max_abs_diff": _max_diff(direct, table),
            "direct_s": direct_s,
            "tabulated_metric_s": table_metric_s,
            "direct": direct,
            "tabulated": table,
        }
    total_direct = sum(m["direct_s"] for m in out["metrics"].values())
    total_table = table_s + sum(m["tabulated_metric_s"] for m in out["metrics"].values())
    out["direct_total_s"] = total_direct
    out["tabulated_total_s"] = total_table
    out["speedup"] = total_direct / total_table
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
