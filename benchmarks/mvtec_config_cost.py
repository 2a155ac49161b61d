"""Training cost of candidate MVTec-AD configs on this machine (to size a CPU config).

For each candidate (image size, width, batch) of ``experiments/configs/mvtec_localization.py``
(base variant ``cpu``), runs the experiment's real code path (data loading and caching, model
init, the jitted step) inside :func:`vae_xai.train.probe`: the first step (compilation) and
``--steps`` more are timed, then the run stops. Candidates are probed in interleaved rounds;
the median seconds per step are reported, with the number of steps that fit in ``--budget_min``
minutes of training. Prints one JSON object.

    python benchmarks/mvtec_config_cost.py --data_dir=$VAE_XAI_DATA_DIR/mvtec_ad \
        --candidates 128:16:16 128:32:16 192:32:16 256:16:16 --rounds 2 --budget_min 90
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile

import jax

from experiments.configs.mvtec_localization import get_config
from vae_xai import train
from vae_xai.experiments import mvtec_localization


def probe(data_dir: str, size: int, width: int, batch: int, steps: int) -> dict:
    config = get_config("cpu")
    config.image_size, config.model.width, config.train.batch_size = size, width, batch
    config.train.num_steps = 10**6  # never reached: the probe stops the run
    with tempfile.TemporaryDirectory(prefix="mvtec_cost_") as tmp:
        try:
            with train.probe(steps):
                mvtec_localization.train_and_evaluate(
                    config, tmp, category="bottle", data_dir=data_dir, progress=False
                )
        except train.ProbeDone as done:
            return done.info
    raise RuntimeError("the probe did not stop the run")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_dir", required=True, help="folder holding bottle/")
    p.add_argument("--candidates", nargs="+", default=["128:16:16", "128:32:16"],
                   help="size:width:batch entries")  # fmt: skip
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--budget_min", type=float, default=90.0)
    args = p.parse_args()
    cands = [tuple(int(v) for v in c.split(":")) for c in args.candidates]
    times: dict[str, list[float]] = {c: [] for c in args.candidates}
    for _ in range(args.rounds):
        for name, (size, width, batch) in zip(args.candidates, cands, strict=True):
            times[name].append(probe(args.data_dir, size, width, batch, args.steps)["s_per_step"])
    out = {
        "device": str(jax.devices()[0]),
        "machine": platform.machine(),
        "cpu_count": jax.local_device_count(),
        "steps_timed": args.steps,
        "rounds": args.rounds,
        "candidates": {
            name: {
                "image_size": size,
                "width": width,
                "batch_size": batch,
                "s_per_step_median": statistics.median(times[name]),
                "s_per_step": times[name],
                "steps_in_budget": int(args.budget_min * 60 / statistics.median(times[name])),
            }
            for name, (size, width, batch) in zip(args.candidates, cands, strict=True)
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
