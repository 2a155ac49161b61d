"""Where the attention of the two top latents lies, for kept dSprites checkpoints.

L_AD is small when the two top latents' maps cover different parts of the sprite, but also
when one map is blank or when the maps sit beside the sprite; this measures which
(:func:`vae_xai.experiments.dsprites_disentanglement.attention_mass_stats`) on the
``eval.overlap_batch`` images the run's own evaluation uses. New evaluations record the same
numbers under ``attention_overlap``; this launcher computes them for checkpoints scored
before, with each run's own config and seed::

    python -m experiments.dsprites_attention_stats --steps=5000,20000 \\
        --run_dirs=workdirs/fv/seed_1,workdirs/ad/seed_1 --out=results/attention_stats.json

Writes one JSON file (refused if it exists) and prints a table.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from absl import app, flags

from experiments import launch
from vae_xai.experiments import dsprites_disentanglement as lib

KEYS = ("mean", "blank_fraction", "on_sprite_top1", "on_sprite_top2", "sprite_area")


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    flags.DEFINE_list("run_dirs", None, "seed folders (WORKDIR/seed_N) with kept checkpoints.")
    flags.DEFINE_list("steps", None, "checkpoint steps, e.g. 5000,20000.")
    flags.DEFINE_string("out", None, "JSON file to write (refused if it exists).")


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: Sequence[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.require("run_dirs", "--run_dirs is required (WORKDIR/seed_N,...)")
    launch.require("steps", "--steps is required (e.g. 5000,20000)")
    launch.require("out", "--out is required")
    FLAGS = flags.FLAGS
    out = pathlib.Path(FLAGS.out)
    if out.exists():
        raise app.UsageError(f"--out={out} exists; give a new file")
    try:
        steps = [int(s) for s in FLAGS.steps]
    except ValueError as err:
        raise app.UsageError(f"--steps must be integers; got {FLAGS.steps}") from err
    rows = [lib.checkpoint_attention_stats(d, s) for d in FLAGS.run_dirs for s in steps]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print("| run | method | seed | step | " + " | ".join(KEYS) + " |")
    print("|---" * (4 + len(KEYS)) + "|")
    for r in rows:
        cells = " | ".join(_cell(r["attention_overlap"][k]) for k in KEYS)
        print(f"| {r['run_dir']} | {r['method']} | {r['seed']} | {r['step']} | {cells} |")


if __name__ == "__main__":
    define_flags()
    launch.run(main)
