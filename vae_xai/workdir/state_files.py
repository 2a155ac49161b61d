"""Reading a workdir's state files (``run.json``, ``seeds.json``, ...).

They are only ever written whole (:func:`vae_xai.provenance.write_json_atomic`), so one that
cannot be read was cut or changed from outside; :func:`read_state_json` turns every way of
failing into one :class:`StateFileError` naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from vae_xai.workdir.errors import WorkdirError

__all__ = ["StateFileError", "read_state_json"]


class StateFileError(WorkdirError):
    """A workdir's state file (``run.json``, ``seeds.json``, ...) cannot be read; the message
    names the file and what to do."""


def read_state_json(path: str | os.PathLike[str], *, fix: str) -> Any:
    """The JSON content of a workdir state file.

    Args:
      path: the file (it must exist).
      fix: what the user should do when it cannot be read (appended to the message).

    Returns:
      The parsed JSON value.

    Raises:
      StateFileError: the file cannot be read or is not valid JSON (e.g. cut by a full disk
        or a kill outside :func:`write_json_atomic`); names the file, the reason and ``fix``.
    """
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise StateFileError(
            f"{path} cannot be read ({reason}){': ' + fix if fix else ''}"
        ) from err
