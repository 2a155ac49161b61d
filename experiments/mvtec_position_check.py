"""Is an MVTec attention hot spot tied to image position rather than content?

    python -m experiments.mvtec_position_check --category=bottle \
        --data_dir=PATH/mvtec_ad --workdir=workdirs/mvtec_bottle \
        --config=experiments/configs/mvtec_localization.py:cpu

Compares the anomaly attention of every test image of a finished
``experiments.mvtec_localization`` run with that of the image rotated by 180 degrees
(:mod:`vae_xai.experiments.mvtec_position_check`) and writes the result to
``workdir/evaluations/position_check_step<N>_<hash>/results.json``. ``--config`` is the
config the run was trained with (default ``:cpu``).
"""

from __future__ import annotations

from absl import flags

from experiments import launch
from vae_xai.experiments import mvtec_position_check as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags(
        "mvtec_localization",
        default_arg="cpu",
        data_dir_help="Folder holding the MVTec-AD categories.",
        seeds=False,  # it evaluates the one run in --workdir (a seed_N folder of --seeds)
    )
    flags.DEFINE_string("category", "bottle", "MVTec-AD category.")
    flags.DEFINE_list("layers", list(lib.LAYERS), "Layers.")


def main(argv: list[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    launch.require("data_dir", "--data_dir is required (the folder of the MVTec-AD categories)")
    launch.require("workdir", "--workdir is required (a trained mvtec_localization run)")
    FLAGS = flags.FLAGS
    written = lib.evaluate(
        FLAGS.config,
        FLAGS.workdir,
        category=FLAGS.category,
        data_dir=FLAGS.data_dir,
        layers=FLAGS.layers,
    )
    print(f"results: {written['results_path']}")


if __name__ == "__main__":
    define_flags()
    launch.run(main)
