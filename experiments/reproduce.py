"""Reproduce every table and figure at the paper's setting, or first see what fits here.

    python -m experiments.reproduce --estimate --data_dir=PATH          # minutes: projection
    python -m experiments.reproduce --workdir=workdirs/reproduce --data_dir=PATH [--jobs=table3]

``PATH`` holds ``mnist/``, ``mvtec_ad/<category>/`` and ``UCSD_Anomaly_Dataset.v1p2/`` (jobs
whose data is missing are skipped and reported). ``--estimate`` runs a few training steps of
every job on this device and prints the projected training time per job, per table and in
total before anything long starts; the run itself resumes each job from its checkpoints and
writes ``workdir/reproduction.md`` (paper vs ours). See :mod:`vae_xai.experiments.reproduce`.
"""

from __future__ import annotations

import json

from absl import app, flags

from experiments import configs, launch
from vae_xai.experiments import reproduce as lib
from vae_xai.workdir import write_json_atomic


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    flags.DEFINE_string("workdir", None, "Root folder: one subfolder per job.")
    flags.DEFINE_string("data_dir", None, "Folder with mnist/, mvtec_ad/, UCSD_...v1p2/.")
    flags.DEFINE_list("jobs", None, "Jobs or tables to run (default: all), e.g. table3,fig1.")
    flags.DEFINE_bool("estimate", False, "Only time a few steps per job and project.")
    flags.DEFINE_integer("estimate_steps", 5, "Steps timed per job after the first.")
    flags.DEFINE_string("estimate_out", None, "Also write the estimate as JSON here.")
    flags.DEFINE_multi_string(
        "override", [], "FIELD=VALUE applied to every job's config (e.g. train.num_steps=100)."
    )
    launch.define_distributed_flags()


def _overrides(items: list[str]) -> dict[str, object]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise app.UsageError(f"--override needs FIELD=VALUE; got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main(argv: list[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.start_distributed()
    FLAGS = flags.FLAGS
    try:
        jobs = lib.select(FLAGS.jobs)
    except ValueError as err:
        raise app.UsageError(f"--jobs: {err}") from err
    overrides = _overrides(FLAGS.override)
    if FLAGS.estimate:
        est = lib.estimate(
            jobs,
            get_config=configs.get_config,
            data_dir=FLAGS.data_dir,
            steps=FLAGS.estimate_steps,
            overrides=overrides,
        )
        print(lib.format_estimate(est))
        if FLAGS.estimate_out:
            write_json_atomic(FLAGS.estimate_out, est)
        return
    launch.require("workdir", "--workdir is required (or --estimate)")
    doc = lib.run(
        jobs,
        FLAGS.workdir,
        get_config=configs.get_config,
        data_dir=FLAGS.data_dir,
        overrides=overrides,
    )
    print(
        json.dumps({k: v.get("ours", v.get("skipped")) for k, v in doc["jobs"].items()}, indent=2)
    )


if __name__ == "__main__":
    define_flags()
    launch.run(main)
