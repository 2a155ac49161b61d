"""MVTec-AD anomaly localization: attention vs reconstruction error (paper Table 2).

    python -m experiments.mvtec_localization --category=bottle \
        --data_dir=PATH/TO/mvtec_anomaly_detection --workdir=workdirs/mvtec_bottle \
        [--config=experiments/configs/mvtec_localization.py:cpu] [--seeds=0,1,2]

Trains (or resumes) a ResNet18-encoder VAE on ``<category>/train/good`` and scores the
reconstruction-error map and the anomaly-attention maps (Eq. 5) at ``config.eval.layers``
with pooled pixel AUROC, best IoU, AUPRO and image AUROC, overall and per defect type
(:mod:`vae_xai.experiments.mvtec_localization`). Writes ``workdir/results.json`` (the results
schema, :mod:`vae_xai.results`, with the paper's numbers for the category where known) and
``workdir/figures/``, links into the evaluation's own folder (:mod:`vae_xai.workdir`).
"""

from __future__ import annotations

from absl import flags

from data_pipelines import mvtec_ad
from experiments import launch
from vae_xai.experiments import mvtec_localization as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags(
        "mvtec_localization",
        data_dir_help="Folder holding the MVTec-AD category folders (<data_dir>/<category>/...).",
    )
    flags.DEFINE_string("category", None, "MVTec-AD category folder name, e.g. bottle.")


def main(argv: list[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    launch.require(
        "data_dir",
        "--data_dir is required: the folder holding the MVTec-AD category folders "
        "(<data_dir>/<category>/train/good/*.png, see data_pipelines/mvtec_ad.py)",
    )
    launch.require(
        "category",
        f"--category is required, e.g. --category=bottle (one of {mvtec_ad.MVTEC_CATEGORIES})",
    )
    launch.require_workdir()
    FLAGS = flags.FLAGS
    results = lib.train_and_evaluate(
        FLAGS.config,
        FLAGS.workdir,
        category=FLAGS.category,
        data_dir=FLAGS.data_dir,
        seeds=launch.seeds(),
    )
    launch.print_localization_report(results)


if __name__ == "__main__":
    define_flags()
    launch.run(main)
