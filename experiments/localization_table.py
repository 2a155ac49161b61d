"""Which anomaly map localizes: every map of several localization runs in one table.

Usage (each workdir an evaluated ``mnist_localization`` / ``mvtec_localization`` run; a
``:group`` picks one defect type instead of ``overall``)::

    python -m experiments.localization_table --out=results/vae_maps \
        --runs=mnist_added=workdirs/mnist_cpu:square,mnist_erased=workdirs/mnist_cpu:erase,\
bottle_cpu=workdirs/bottle_cpu

Writes ``maps_table.json`` and ``maps_table.md`` (maps x data, mean +- std over seeds, for
pixel AUROC, AUPRO, best IoU and image AUROC, and each map's cost per test image;
:func:`vae_xai.experiments.localization_table.write`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import app, flags

from experiments import launch
from vae_xai.experiments import localization_table as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    flags.DEFINE_list("runs", None, "label=workdir[:group] entries, comma-separated.")
    flags.DEFINE_string("out", None, "Output folder (maps_table.json, maps_table.md).")


def main(argv: Sequence[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.require("runs", "--runs is required (label=workdir[:group],...)")
    launch.require("out", "--out is required")
    try:
        columns = lib.parse_columns(flags.FLAGS.runs)
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    lib.write(columns, flags.FLAGS.out)
    print((pathlib.Path(flags.FLAGS.out) / "maps_table.md").read_text())


if __name__ == "__main__":
    define_flags()
    launch.run(main)
