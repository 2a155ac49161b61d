"""One-class MNIST: attention and anomaly attention of a VAE trained on one digit (paper Fig. 4).

    python -m experiments.mnist_attention --data_dir=PATH/TO/mnist --workdir=/tmp/mnist_att \
        [--config=experiments/configs/mnist_attention.py:cpu] [--seeds=0,1,2]

For each training digit it trains (or resumes) a ConvVAE in ``workdir/digit_N``, then writes
``workdir/figure_digit_N.png`` and ``workdir/results.json`` (the results schema; per seed,
one-class detection AUROCs of four per-image scores under ``digits``), links into the
evaluation's own folder (:func:`vae_xai.experiments.mnist_attention.train_and_evaluate`).
"""

from __future__ import annotations

import json

from absl import flags

from experiments import launch
from vae_xai.experiments import mnist_attention as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags(
        "mnist_attention", data_dir_help="Folder with the four MNIST IDX files."
    )
    flags.DEFINE_enum("source", "idx", ["idx", "tfds"], "Read IDX files or TFDS mnist.")


def main(argv: list[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    FLAGS = flags.FLAGS
    launch.require_workdir()
    if FLAGS.source == "idx":
        launch.require("data_dir", "--data_dir is required (folder with the MNIST IDX files)")
    results = lib.train_and_evaluate(
        FLAGS.config,
        FLAGS.workdir,
        data_dir=FLAGS.data_dir,
        source=FLAGS.source,
        seeds=launch.seeds(),
    )
    print(json.dumps({s: e["digits"] for s, e in results["per_seed"].items()}, indent=2))


if __name__ == "__main__":
    define_flags()
    launch.run(main)
