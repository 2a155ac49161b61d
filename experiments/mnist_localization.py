"""MNIST with synthetic anomalies: a positive control for anomaly localization.

    python -m experiments.mnist_localization --data_dir=$VAE_XAI_DATA_DIR/mnist \
        --workdir=workdirs/mnist_localization \
        [--config=experiments/configs/mnist_localization.py:cpu] [--seeds=0,1,2]

Trains a one-class MNIST VAE on ``config.normal_digit``, pastes synthetic squares of added or
erased ink with exact masks into held-out test images of that digit, and scores the
reconstruction-error, model-free and anomaly-attention maps with the MVTec-AD metrics
(:mod:`vae_xai.experiments.mnist_localization`). Writes ``workdir/results.json`` and
``workdir/figures/`` and prints the summary table.
"""

from __future__ import annotations

from absl import flags

from experiments import launch
from vae_xai.experiments import mnist_localization as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags(
        "mnist_localization", data_dir_help="Folder with the four MNIST IDX files."
    )


def main(argv: list[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    launch.require(
        "data_dir",
        "--data_dir is required: the folder with the four MNIST IDX files "
        "(e.g. $VAE_XAI_DATA_DIR/mnist, see data_pipelines/mnist.py)",
    )
    launch.require_workdir()
    FLAGS = flags.FLAGS
    results = lib.train_and_evaluate(
        FLAGS.config, FLAGS.workdir, data_dir=FLAGS.data_dir, seeds=launch.seeds()
    )
    launch.print_localization_report(results)


if __name__ == "__main__":
    define_flags()
    launch.run(main)
