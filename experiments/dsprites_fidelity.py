"""How faithful is the dSprites renderer? Best-match IoU against the real reference frames.

    python -m experiments.dsprites_fidelity --data_dir=/path/to/data --out=/tmp/dsprites.json

``--data_dir`` must contain ``dsprites_reference/dsprites_gif_frames.npy``; the JSON (the
results schema, :mod:`vae_xai.results`) and a figure next to it (same name, ``.png``) are
written by :func:`vae_xai.experiments.dsprites_fidelity.run` (the search is described there).
No training, no workdir and no seeds: this launcher has no ``--config``/``--seeds``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from absl import flags

from experiments import launch
from vae_xai.experiments import dsprites_fidelity as lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    flags.DEFINE_string("data_dir", None, "folder holding dsprites_reference/ (required)")
    flags.DEFINE_string("out", "dsprites_fidelity.json", "output JSON; the PNG goes next to it")
    flags.DEFINE_integer("every", 1, "match every k-th frame (1 = all 320)")
    flags.DEFINE_integer("radius", 1, "position-class window around the centroid estimate")
    flags.DEFINE_integer("exhaustive", 0, "also brute-force this many frames (~20 s each)")


def main(argv: Sequence[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.require("data_dir", "--data_dir is required (the folder holding dsprites_reference/)")
    FLAGS = flags.FLAGS
    summary = lib.run(
        FLAGS.data_dir, FLAGS.out, every=FLAGS.every, radius=FLAGS.radius,
        exhaustive=FLAGS.exhaustive,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in summary.items() if k != "per_frame"}, indent=1))


if __name__ == "__main__":
    define_flags()
    launch.run(main)
