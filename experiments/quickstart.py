"""Quickstart: train a small VAE on dSprites rendered on the fly and explain each latent.

    python -m experiments.quickstart --workdir=workdirs/quickstart [--seeds=0,1,2]

No download: images come from :func:`data_pipelines.dsprites.render`. Writes
``workdir/latent_attention.png`` (paper Fig. 1: one row per latent dimension, its attention
map over several samples), ``workdir/reconstructions.png`` and ``workdir/results.json`` (the
results schema: final losses and the KL of each latent dimension under ``per_seed``); these
are links into the evaluation's own folder ``workdir/evaluations/step<N>_<hash>/``
(:func:`vae_xai.experiments.quickstart.train_and_evaluate`). A second run on the same workdir
resumes from its checkpoint; a larger ``--config.train.num_steps`` continues it, and a change of
anything that changes training is refused (see :mod:`vae_xai.workdir`).
"""

from __future__ import annotations

import json

from absl import flags

from experiments import launch
from vae_xai.experiments import quickstart as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags("quickstart", workdir_default="workdirs/quickstart")


def main(argv: list[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    launch.require("workdir", "--workdir is required (default workdirs/quickstart)")
    FLAGS = flags.FLAGS
    results = lib.train_and_evaluate(FLAGS.config, FLAGS.workdir, seeds=launch.seeds())
    shown = {k: results[k] for k in ("per_seed", "results_path")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    define_flags()
    launch.run(main)
