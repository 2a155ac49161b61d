"""The flags every launcher shares, defined one way: ``define_flags`` under ``__main__``.

Each launcher (``python -m experiments.NAME``) is flags + ``main``: its ``define_flags()``
calls :func:`define_common_flags` (``--config``, ``--workdir``, ``--seeds``, and
``--data_dir`` where the experiment reads data) plus its own, and its ``main`` calls one
library function, ``vae_xai.experiments.NAME.train_and_evaluate(config, workdir, ...)``.
Flags are defined only when a launcher runs as a script, so tests can import several
launchers (and their libraries) in one process without duplicate flag definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR
from vae_xai.seeds import parse_seeds
from vae_xai.validation import ConfigError

__all__ = [
    "define_common_flags",
    "define_distributed_flags",
    "no_arguments",
    "require",
    "seeds",
    "start_distributed",
]

FLAGS = flags.FLAGS


def define_common_flags(
    config_name: str,
    *,
    default_arg: str | None = None,
    workdir_default: str | None = None,
    data_dir_help: str | None = None,
    seeds: bool = True,
    seeds_default: Sequence[str] | None = None,
) -> None:
    """``--config`` (``experiments/configs/<config_name>.py[:default_arg]``), ``--workdir``,
    ``--seeds`` (unless ``seeds`` is false) and, with ``data_dir_help``, ``--data_dir``."""
    path = str(CONFIG_DIR / f"{config_name}.py") + (f":{default_arg}" if default_arg else "")
    config_flags.DEFINE_config_file(
        "config",
        path,
        "ml_collections config file[:variant]; variants smoke | cpu | full (see "
        "experiments/configs/common.py); override fields with --config.FIELD=VALUE.",
    )
    flags.DEFINE_string("workdir", workdir_default, "Output folder: one run (see README).")
    if seeds:
        flags.DEFINE_list(
            "seeds",
            None if seeds_default is None else list(seeds_default),
            "Comma-separated seeds, e.g. 0,1,2: each seed one run in workdir/seed_N, results "
            "aggregated (mean +- std) in workdir/results.json. Default: "
            + ("config.seed in workdir." if seeds_default is None else ",".join(seeds_default)),
        )
    if data_dir_help:
        flags.DEFINE_string("data_dir", None, data_dir_help)
    define_distributed_flags()


def define_distributed_flags() -> None:
    """``--coordinator_address``, ``--num_processes``, ``--process_id``, ``--distributed``
    (:mod:`vae_xai.distributed`) and ``--steps_per_dispatch``; every launcher has them."""
    flags.DEFINE_string(
        "coordinator_address", None, "HOST:PORT of process 0 for multi-process training."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes (with coordinator).")
    flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1.")
    flags.DEFINE_bool(
        "distributed", False, "Start jax.distributed with auto-detection (TPU pods, SLURM)."
    )
    flags.DEFINE_integer(
        "steps_per_dispatch",
        1,
        "Training steps per jitted call (a lax.scan over a block of batches): the same "
        "result as single steps, fewer dispatches (pays on accelerators).",
        lower_bound=1,
    )


def start_distributed() -> bool:
    """Start ``jax.distributed`` as the flags say (a no-op without them); a bad combination
    is a usage error before anything connects. Also sets ``--steps_per_dispatch`` as the
    default of every training call (:func:`vae_xai.train.set_default_steps_per_dispatch`).
    Returns whether several processes run."""
    from vae_xai import distributed, train

    train.set_default_steps_per_dispatch(FLAGS.steps_per_dispatch)

    try:
        return distributed.initialize(
            FLAGS.coordinator_address,
            FLAGS.num_processes,
            FLAGS.process_id,
            auto=FLAGS.distributed,
        )
    except distributed.DistributedConfigError as err:
        raise app.UsageError(str(err)) from err


def no_arguments(argv: Sequence[str]) -> None:
    """Refuse positional arguments (a mistyped flag ends up there)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")


def require(name: str, message: str) -> None:
    """A usage error ``message`` unless flag ``--name`` is set."""
    if not FLAGS[name].value:
        raise app.UsageError(message)


def seeds() -> list[int] | None:
    """``--seeds`` as integers (``None`` when not given); a bad value is a usage error."""
    try:
        return parse_seeds(FLAGS.seeds)
    except ConfigError as err:
        raise app.UsageError(f"--seeds: {err}") from err
