"""The launchers' ml_collections config files, shipped inside the package.

The README spells configs as paths relative to a clone, ``--config=experiments/configs/NAME.py``
(ml_collections' ``config_flags`` opens the path as given). After a non-editable ``pip install``
that path does not exist in the user's directory; :func:`resolve_config_path` maps it (and a
bare ``NAME.py``) to the copy installed with this package, and
:func:`install_config_path_fallback` (called by :func:`experiments.launch.define_common_flags`
when a launcher defines its flags, never on import) makes every launcher's ``--config`` flag
use it. A path that exists is always used as given, so a user's
own config file wins.
"""

from __future__ import annotations

import functools
import importlib
import os
import pathlib

__all__ = ["CONFIG_DIR", "get_config", "install_config_path_fallback", "resolve_config_path"]

CONFIG_DIR = pathlib.Path(__file__).resolve().parent


def get_config(name: str, arg: str | None = None):
    """``experiments/configs/NAME.py``'s ``get_config(arg)``.

    What ``--config=...NAME.py:arg`` gives; passed to the libraries that build several
    experiments' configs (:func:`vae_xai.experiments.reproduce.run`).

    Args:
      name: the config module's name.
      arg: its argument (variant), or ``None`` for its default.

    Returns:
      The config.
    """
    return importlib.import_module(f"experiments.configs.{name}").get_config(arg)


def resolve_config_path(spec: str) -> str:
    """``PATH[:variant]`` unchanged if ``PATH`` exists, else the packaged config of that name.

    ``experiments/configs/quickstart.py:smoke`` (or ``configs/quickstart.py``, or
    ``quickstart.py``) becomes ``<installed experiments/configs>/quickstart.py:smoke`` when
    the relative path does not exist from the current directory. Anything else is returned
    unchanged, so ml_collections reports the missing file as usual.

    Args:
      spec: the ``--config`` value.

    Returns:
      The path to open, with its ``:variant``.
    """
    path, sep, variant = spec.partition(":")
    if not path or os.path.exists(path):
        return spec
    parts = pathlib.PurePath(path).parts
    shipped = parts[-1:] == parts or (len(parts) >= 2 and parts[-2] == "configs")
    if shipped and parts[-1].endswith(".py") and not pathlib.PurePath(path).is_absolute():
        candidate = CONFIG_DIR / parts[-1]
        if candidate.is_file() and candidate.name != "__init__.py":
            return str(candidate) + sep + variant
    return spec


def install_config_path_fallback() -> None:
    """Make ml_collections config-file flags resolve paths with :func:`resolve_config_path`.

    Wraps ``ConfigFileFlagParser.parse`` once per process (idempotent). The wrapper only
    rewrites a path that does not exist; if a future ml_collections moves the parser, this is
    a no-op and only the launchers' defaults (absolute paths) keep working from any directory.
    """
    try:
        from ml_collections.config_flags import config_flags
    except ImportError:  # pragma: no cover - ml_collections is a dependency
        return
    parser = getattr(config_flags, "ConfigFileFlagParser", None)
    if parser is None or getattr(parser.parse, "_resolves_packaged_configs", False):
        return
    original = parser.parse

    @functools.wraps(original)
    def parse(self, path):
        if isinstance(path, str):
            path = resolve_config_path(path)
        return original(self, path)

    parse._resolves_packaged_configs = True
    parser.parse = parse
