"""Table 3 along training: dSprites score curves of several runs, side by side.

Usage (each workdir trained with ``--config.train.keep_every=K`` and scored with
``--curve_every=K`` by ``python -m experiments.dsprites_disentanglement``)::

    python -m experiments.dsprites_curves --out=results/dsprites_curves \
        --runs=factorvae=workdirs/fv,ad_factorvae=workdirs/ad,beta_vae=workdirs/bvae

A label given twice collects the seeds of both workdirs into one curve (seeds of one method
trained in two workdirs, e.g. on two machines or sessions; trained with the same config on the
same data and scored with the same evaluation config,
:func:`vae_xai.experiments.dsprites_curves.merge_curves`); a copy of a workdir without its
``checkpoints`` folders is enough::

    python -m experiments.dsprites_curves --out=results/dsprites_curves \
        --runs=factorvae=archive/fv,factorvae=workdirs/fv_seed2,ad_factorvae=workdirs/ad

Labels are free: an ablation gets one label per setting (here AD-FactorVAE's weight, trained
with ``--config.ad.weight=10`` and ``=40``; each method's paper value is drawn once)::

    python -m experiments.dsprites_curves --out=results/dsprites_curves/ad_weight \
        --runs=factorvae=workdirs/fv,ad_factorvae=workdirs/ad,ad_lambda10=workdirs/ad10,ad_lambda40=workdirs/ad40

Writes ``curves.json``, ``curves.md`` (scores per step, mean +- std over seeds; the paired
difference AD-FactorVAE - FactorVAE per seed with a 95% t-interval and the smallest difference
those seeds would detect at 80% power; training s/step), ``curves.png`` and, for the pair,
``paired.png`` (each seed's difference against step)
(:func:`vae_xai.experiments.dsprites_curves.compare`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import app, flags

from experiments import launch
from vae_xai.experiments import dsprites_curves as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    flags.DEFINE_list(
        "runs", None, "label=workdir entries, comma-separated; a label given twice merges the "
        "seeds of its workdirs."
    )  # fmt: skip
    flags.DEFINE_string("out", None, "Output folder (curves.json, curves.md, curves.png).")
    flags.DEFINE_list(
        "pair", None, "Two labels a,b for the paired difference a - b (default: "
        "ad_factorvae,factorvae when both are given)."
    )  # fmt: skip


def main(argv: Sequence[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.require("runs", "--runs is required (label=workdir,...)")
    launch.require("out", "--out is required")
    FLAGS = flags.FLAGS
    try:
        runs = lib.parse_runs(FLAGS.runs)
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    if FLAGS.pair is not None and len(FLAGS.pair) != 2:
        raise app.UsageError(f"--pair takes two labels a,b; got {FLAGS.pair}")
    pair = tuple(FLAGS.pair) if FLAGS.pair else None
    lib.compare(runs, FLAGS.out, pair=pair)
    print((pathlib.Path(FLAGS.out) / "curves.md").read_text())


if __name__ == "__main__":
    define_flags()
    launch.run(main)
