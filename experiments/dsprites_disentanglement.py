"""Paper Table 3 and Figure 8: beta-VAE, FactorVAE and AD-FactorVAE on dSprites.

Usage::

    python -m experiments.dsprites_disentanglement --workdir=workdirs/dsprites/ad_factorvae \
        --config=experiments/configs/dsprites_disentanglement.py:ad_factorvae --seeds=0,1,2
    # CPU run, and FactorVAE side by side in the attention figure:
    python -m experiments.dsprites_disentanglement --workdir=workdirs/dsprites/ad_cpu \
        --config=experiments/configs/dsprites_disentanglement.py:ad_factorvae,cpu --seeds=0 \
        --compare_workdir=workdirs/dsprites/fv_cpu

Each seed trains in ``workdir/seed_N``; the metrics (FactorVAE score, beta-VAE score, MIG),
latent traversals and the Figure 8 attention pairs are written per seed in the evaluation's
folder, and ``workdir/results.json`` (the results schema) holds every seed's numbers and
their mean / std (:func:`vae_xai.experiments.dsprites_disentanglement.train_and_evaluate`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags

from experiments import launch
from vae_xai.experiments import dsprites_disentanglement as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    launch.define_common_flags(
        "dsprites_disentanglement",
        default_arg="ad_factorvae",
        seeds_default=[str(s) for s in lib.DEFAULT_SEEDS],
    )
    flags.DEFINE_string(
        "compare_workdir",
        None,
        "Workdir of another method's run (same seeds) to show side by side in the attention "
        "figure.",
    )
    flags.DEFINE_bool("skip_eval", False, "Only train (no metrics / figures).")
    flags.DEFINE_bool(
        "ensemble",
        False,
        "Train the --seeds as one vmapped step (one compile, one dispatch per step for all "
        "seeds; for GPUs/TPUs: on a 2-core CPU it is no faster than seeds in sequence).",
    )
    flags.DEFINE_integer(
        "curve_every",
        0,
        "Also score every seed at each kept checkpoint (--config.train.keep_every) whose step is "
        "a multiple of this: scores along training in workdir/curve.json, curve.png (0: off).",
        lower_bound=0,
    )
    flags.DEFINE_string(
        "official_dsprites",
        None,
        "Path of the official dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz (or its folder): "
        "score the metrics on the official images instead of our renderer's (training still "
        "renders). Default: the renderer (no download needed).",
    )


def main(argv: Sequence[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    launch.require_workdir()
    FLAGS = flags.FLAGS
    out = lib.train_and_evaluate(
        FLAGS.config,
        FLAGS.workdir,
        seeds=launch.seeds(),
        compare_workdir=FLAGS.compare_workdir,
        skip_eval=FLAGS.skip_eval,
        official_dsprites=FLAGS.official_dsprites,
        ensemble=FLAGS.ensemble,
        curve_every=FLAGS.curve_every,
    )
    if out:
        print(json.dumps({"method": out["method"], **out["summary"]}, indent=2))


if __name__ == "__main__":
    define_flags()
    launch.run(main)
