"""Do two runs give the same numbers? Compare two ``results.json`` files exactly.

Usage::

    python -m experiments.compare_results --a=WORKDIR_A/results.json --b=WORKDIR_B/results.json

Every number and list of numbers of the seeds' entries (``per_seed``) is compared for
equality, wall times and timestamps left out (:func:`vae_xai.results.differences`). Prints
JSON; exits 1 when a number differs or a seed's entry has numbers the other lacks. The check
behind "this change of code leaves the results bit-identical" (RESULTS.md).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from absl import app, flags

from experiments import launch
from vae_xai import results as results_lib


def define_flags() -> None:
    """Define this launcher's flags (only when it runs as a script)."""
    flags.DEFINE_string("a", None, "The first results.json (or the workdir holding it).")
    flags.DEFINE_string("b", None, "The second results.json (or the workdir holding it).")


def main(argv: Sequence[str]) -> None:
    """Run the launcher once its flags are parsed (the entry point of :func:`launch.run`).

    Args:
      argv: the command line left after flag parsing; only the program name is accepted.
    """
    launch.no_arguments(argv)
    launch.require("a", "--a is required: a results.json (or its workdir)")
    launch.require("b", "--b is required: a results.json (or its workdir)")
    docs = {}
    for name in ("a", "b"):
        try:
            docs[name] = results_lib.read(flags.FLAGS[name].value)
        except (OSError, ValueError) as err:
            raise app.UsageError(f"--{name}: {err}") from err
    a, b = docs["a"], docs["b"]
    out = results_lib.differences(a, b)
    print(json.dumps(out, indent=2))
    if out["differ"] or out["only_a"] or out["only_b"]:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    launch.run(main)
