"""One process of tests/test_distributed.py: a few training steps of a small VAE under
``jax.distributed`` (or alone), then the final parameters to an ``.npz`` (process 0).

    python tests/distributed_worker.py --workdir W --out P.npz --num_steps 4 \
        [--coordinator localhost:PORT --num_processes 2 --process_id I] [--die_after 3]

The device count per process comes from ``XLA_FLAGS`` (set by the test). ``--die_after N``
ends every process abruptly (``os._exit``) right after step N, as a kill would.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

jax.config.update("jax_platforms", "cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--num_steps", type=int, default=4)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num_processes", type=int, default=None)
    parser.add_argument("--process_id", type=int, default=None)
    parser.add_argument("--die_after", type=int, default=None)
    parser.add_argument("--eval_dir", default=None)
    args = parser.parse_args()

    from vae_xai import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=60)

    import numpy as np
    import optax

    from vae_xai import train
    from vae_xai.models.conv_vae import ConvVAE

    model = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=2)
    optimizer = optax.adam(1e-2)
    state = train.init_state(model, optimizer, (8, 8, 1), seed=0, key=jax.random.key(0))
    data = np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32) > 0.5
    data = data.astype(np.float32)

    def batch_fn(step: int) -> dict[str, np.ndarray]:  # global batch of 8, a function of step
        i = (step * 8) % 64
        return {"image": data[i : i + 8]}

    hooks = {}
    if args.die_after:

        def die(step: int, _state) -> None:
            if step == args.die_after:
                sys.stdout.flush()
                os._exit(3)

        hooks[args.die_after] = die

    state = train.fit(
        state,
        train.vae_update_fn(model, optimizer),
        batch_fn,
        workdir=args.workdir,
        num_steps=args.num_steps,
        seed=0,
        checkpoint_every=2,
        log_every=1,
        progress=False,
        hooks=hooks,
    )
    flat = {
        jax.tree_util.keystr(path): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]
    }
    if distributed.is_primary():
        np.savez(args.out, step=np.asarray(int(state.step)), **flat)
    if args.eval_dir:
        evaluate(model, distributed.local_copy(state), data, args.eval_dir)
    print(
        f"process {jax.process_index()}/{jax.process_count()} devices {jax.device_count()} "
        f"step {int(state.step)}",
        flush=True,
    )


def evaluate(model, state, data, eval_dir: str) -> None:
    """Sharded evaluation (vae_xai.distributed.map_batches inside the map functions) on this
    process's copy of the parameters, and one figure and one JSON file written through the
    process-0 gates, named by process (only process 0's may exist)."""
    import pathlib

    import flax.serialization
    import matplotlib.pyplot as plt
    import numpy as np

    from vae_xai import distributed, plots, workdir
    from vae_xai.localization import maps

    out = pathlib.Path(eval_dir)
    out.mkdir(parents=True, exist_ok=True)
    variables = {"params": state.params}
    images = data[:18]  # 5 batches of 4 (the last padded): an uneven split over 2 processes
    mu, logvar = maps.encoder_statistics(model, variables, images, batch_size=4)
    recon = maps.reconstruction_error_maps(model, variables, images, batch_size=4)
    attention = maps.anomaly_attention_maps(
        model, variables, images, layer="conv1", key=jax.random.key(7), batch_size=4
    )
    index = jax.process_index()
    plots.save_figure(plt.figure(), out / f"figure_process{index}.png")
    workdir.write_json_atomic(out / f"json_process{index}.json", {"process": index})
    if distributed.is_primary():
        (out / "params.msgpack").write_bytes(flax.serialization.to_bytes(state.params))
        np.savez(out / "maps.npz", mu=mu, logvar=logvar, recon=recon, attention=attention)
    distributed.sync("worker_eval")


if __name__ == "__main__":
    main()
