"""The flags every launcher shares, defined one way: ``define_flags`` under ``__main__``.

Each launcher (``python -m experiments.NAME``) is flags + ``main``: its ``define_flags()``
calls :func:`define_common_flags` (``--config``, ``--workdir``, ``--seeds``, and
``--data_dir`` where the experiment reads data) plus its own, and its ``main`` calls one
library function, ``vae_xai.experiments.NAME.train_and_evaluate(config, workdir, ...)``.
Flags are defined only when a launcher runs as a script, so tests can import several
launchers (and their libraries) in one process without duplicate flag definitions.

Each launcher ends with ``launch.run(main)`` instead of ``app.run(main)``: a usage error (an
unknown flag or config field, a bad config value, a refused workdir, a workdir in use) prints
one line ``NAME: error: ...`` and exits 2; a known failure of the run (a damaged checkpoint, a
diverged run) prints one line and exits 1; a run stopped by SIGTERM/SIGINT after saving its
step exits 128 + the signal's number. ``VAE_XAI_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging as std_logging
import math
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app, flags
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR, install_config_path_fallback
from vae_xai import distributed, localization, train
from vae_xai.seeds import parse_seeds
from vae_xai.train import CheckpointError, DivergenceError, Interrupted
from vae_xai.validation import ConfigError
from vae_xai.workdir import WorkdirError, config_dict, flatten

__all__ = [
    "define_common_flags",
    "define_distributed_flags",
    "no_arguments",
    "require",
    "run",
    "seeds",
    "start_distributed",
]

# exit statuses: 2 a usage error (as argparse), 1 a run that failed in a known way
USAGE_EXIT = 2
FAILURE_EXIT = 1

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
    """Define ``--config``, ``--workdir``, ``--seeds`` and ``--data_dir`` as every launcher does.

    ``--config=experiments/configs/NAME.py`` then also works from any directory after a
    non-editable install (:func:`experiments.configs.install_config_path_fallback`). Without
    ``--config`` on the command line, the default config and its overrides are read here, so a
    bad override fails here, as one line (exit 2). Also defines the distributed flags
    (:func:`define_distributed_flags`).

    Args:
      config_name: the config module, ``experiments/configs/<config_name>.py``.
      default_arg: the default variant (``:default_arg``), or ``None`` for the config's own.
      workdir_default: the default ``--workdir``.
      data_dir_help: defines ``--data_dir`` with this help text; ``None``: no data flag.
      seeds: define ``--seeds``.
      seeds_default: the default seeds; ``None`` runs ``config.seed`` in the workdir itself.
    """
    install_config_path_fallback()
    path = str(CONFIG_DIR / f"{config_name}.py") + (f":{default_arg}" if default_arg else "")
    try:  # without --config, the default config and its overrides are read here
        config_flags.DEFINE_config_file(
            "config",
            path,
            "ml_collections config file[:variant]; variants smoke | cpu | full (see "
            "experiments/configs/common.py); override fields with --config.FIELD=VALUE.",
        )
    except (KeyError, AttributeError, ValueError, TypeError) as err:
        _fail_override(err, sys.argv)
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
    """Start ``jax.distributed`` as the flags say (a no-op without them).

    A bad combination is a usage error before anything connects. Also sets
    ``--steps_per_dispatch`` as the default of every training call
    (:func:`vae_xai.train.set_default_steps_per_dispatch`).

    Returns:
      Whether several processes run.

    Raises:
      app.UsageError: a bad combination of the distributed flags.
    """
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
    """Refuse positional arguments (a mistyped flag ends up there).

    Args:
      argv: the command line left after flag parsing.

    Raises:
      app.UsageError: anything besides the program name.
    """
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {list(argv[1:])}")


def require(name: str, message: str) -> None:
    """Require flag ``--name`` to be set.

    Args:
      name: the flag.
      message: the usage error's text.

    Raises:
      app.UsageError: the flag is not set.
    """
    if not FLAGS[name].value:
        raise app.UsageError(message)


def require_workdir() -> None:
    """Require ``--workdir`` (checkpoints, results.json and figures go there).

    Raises:
      app.UsageError: ``--workdir`` is not set.
    """
    require("workdir", "--workdir is required (checkpoints, results.json, figures)")


def print_localization_report(results: dict[str, Any]) -> None:
    """Print each seed's localization table (:func:`vae_xai.localization.print_report`).

    Args:
      results: the aggregate results document (``per_seed``, ``results_path``).
    """
    for seed, entry in results["per_seed"].items():
        print(f"seed {seed}:")
        localization.print_report(entry, results["results_path"])


def seeds() -> list[int] | None:
    """``--seeds`` as integers.

    Returns:
      The seeds, or ``None`` when not given.

    Raises:
      app.UsageError: a bad value (:func:`vae_xai.seeds.parse_seeds`).
    """
    try:
        return parse_seeds(FLAGS.seeds)
    except ConfigError as err:
        raise app.UsageError(f"--seeds: {err}") from err


def _fail(message: str, code: int) -> NoReturn:
    """Print ``message`` as one line naming the launcher and exit with ``code``."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "launcher"
    if prog in ("__main__.py", "-m", "-c"):
        prog = "launcher"
    text = " ".join(str(message).split("\n")) if "\n  " not in str(message) else str(message)
    print(f"{prog}: error: {text}", file=sys.stderr, flush=True)
    # reported: what unfinished background work (orbax's writer threads after a failed save)
    # raises while the interpreter shuts down is not news
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    # ... nor what asyncio logs of orbax's failed write tasks when they are collected ("Task
    # exception was never retrieved"; printed or not depending on when the GC runs)
    std_logging.getLogger("asyncio").disabled = True
    sys.exit(code)


def _without_traceback(text: str) -> str:
    """A flag error whose text embeds a traceback (ml_collections does, for an error inside
    ``get_config``, e.g. an unknown variant) as its first line's flag and the error's line."""
    if "Traceback (most recent call last)" not in text:
        return text
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    flag = lines[0].split(": Error whilst parsing", 1)[0].rstrip(":")
    return f"{flag}: {re.sub(r'^[A-Za-z_.]+(Error|Exception): ', '', lines[-1])}"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one line and exit 2 on a bad flag or config override (a typo
    such as ``--config.trian.num_steps=5`` raises inside ml_collections)."""
    try:
        rest = FLAGS(argv)
        if "config" in FLAGS and FLAGS["config"].value is not None:
            FLAGS["config"].value.to_dict()  # a config file that failed to load raises here
        return rest
    except flags.Error as err:
        _fail(_without_traceback(str(err)), USAGE_EXIT)
    except OSError as err:  # ml_collections: the --config file cannot be loaded
        lines = [x.strip() for x in str(err).splitlines() if x.strip()]
        _fail(f"--config: cannot load the config file: {lines[-1] if lines else err}", USAGE_EXIT)
    except (KeyError, AttributeError, ValueError, TypeError) as err:
        _fail_override(err, argv)


def _fail_override(err: Exception, argv: Sequence[str]) -> NoReturn:
    """A failed ``--config.FIELD=VALUE`` override as one line naming the override (the
    message alone is the bare field, e.g. 'trian'), with ml_collections' suggestion."""
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    # (ml_collections may add its suggestion: "'trian'\nDid you mean "train" ...?")
    given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]

    def names(override: str) -> bool:
        return any(  # quoted, or quoted inside a repr (an AttributeError's message)
            f"'{part}'" in message or f"\\'{part}\\'" in message for part in override.split(".")[1:]
        )

    culprit = next((a for a in given if names(a)), None)
    if culprit and isinstance(err, KeyError | AttributeError):
        hint = re.search(r'Did you mean "([^"]+)"', message)
        message = f"{culprit}: no such config field" + (
            f' (did you mean "{hint.group(1)}"?)' if hint else ""
        )
    _fail(f"bad flag or config override: {message}", USAGE_EXIT)


def check_config_values(config: Any) -> None:
    """Check that every float of ``config`` is finite.

    ``--config.train.beta=nan`` is a usage error at the start, not a divergence later.

    Args:
      config: the launcher's config.

    Raises:
      ConfigError: naming the first non-finite field.
    """
    for key, value in flatten(config_dict(config)).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(key, f"must be finite; got {value!r}")


def _guard(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
    """``main`` whose known errors end as one line and an exit status (see the module doc)."""

    def guarded(argv: list[str]) -> None:
        # what background threads raise (orbax's writers after a failed save) is held back:
        # dropped when the run ends in a known, reported failure, printed otherwise
        held: list[str] = []
        hooks = (sys.unraisablehook, threading.excepthook)
        sys.unraisablehook = lambda u: held.append(
            "".join(traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback))
        )
        threading.excepthook = lambda a: held.append(
            "".join(traceback.format_exception(a.exc_type, a.exc_value, a.exc_traceback))
        )

        def show_held() -> None:
            sys.unraisablehook, threading.excepthook = hooks
            for text in held:
                print(text, file=sys.stderr, end="")
            held.clear()

        try:
            if "config" in FLAGS and FLAGS["config"].value is not None:
                check_config_values(FLAGS.config)
            main(argv)
            show_held()
        except (
            Interrupted,
            app.UsageError,
            ConfigError,
            WorkdirError,
            FileNotFoundError,
            CheckpointError,
            DivergenceError,
        ):
            held.clear()
            raise
        except BaseException:
            show_held()
            raise

    def reported(argv: list[str]) -> None:
        if os.environ.get("VAE_XAI_TRACEBACK", "") not in ("", "0"):
            main(argv)
            return
        try:
            guarded(argv)
        except Interrupted as err:
            _fail(str(err), err.exit_code)
        except (app.UsageError, ConfigError, WorkdirError) as err:
            _fail(str(err), USAGE_EXIT)
        except FileNotFoundError as err:  # a missing data folder or file, named
            _fail(str(err), USAGE_EXIT)
        except (CheckpointError, DivergenceError) as err:
            _fail(str(err), FAILURE_EXIT)

    return reported


def run(main: Callable[[list[str]], None]) -> None:
    """``app.run(main)`` with the launchers' error handling (see the module doc).

    Args:
      main: the launcher's ``main(argv)``.
    """
    app.run(_guard(main), flags_parser=_parse_flags)
