"""UCSD Ped1 anomaly localization: reconstruction vs attention at conv1/2/3 (paper Table 1).

    python -m experiments.ucsd_localization --data_dir=PATH/TO/UCSD_Anomaly_Dataset.v1p2 \
        --workdir=workdirs/ucsd_ped1 [--config=experiments/configs/ucsd_localization.py:cpu] \
        [--seeds=0,1,2]

Data (not downloaded by this code): the UCSD Anomaly Detection Dataset (Mahadevan et al.,
CVPR 2010), archive ``UCSD_Anomaly_Dataset.tar.gz`` from
http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm . Extract it and pass the
``UCSD_Anomaly_Dataset.v1p2`` folder (or ``UCSDped1``, or a folder holding either) as
``--data_dir`` (layout: :mod:`data_pipelines.ucsd_ped1`).

Trains (or resumes) the three-conv VAE of :mod:`vae_xai.models.ucsd_vae` on every training
frame and reports pooled pixel AUROC (the Table 1 metric), best IoU, AUPRO and frame-level
AUROC of the reconstruction-error and anomaly-attention maps at conv1/2/3
(:mod:`vae_xai.experiments.ucsd_localization`) to ``workdir/results.json``, with ROC curves and
overlays in ``workdir/figures/`` (links into the evaluation's own folder).
"""

from __future__ import annotations

from absl import flags

from experiments import launch
from vae_xai.experiments import ucsd_localization as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags(
        "ucsd_localization",
        data_dir_help="UCSD_Anomaly_Dataset.v1p2 folder (or UCSDped1, or a folder holding it).",
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
        "--data_dir is required: the extracted UCSD_Anomaly_Dataset.v1p2 folder "
        "(download: http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm)",
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
