"""--config=experiments/configs/NAME.py resolves to the packaged config from any directory."""

from __future__ import annotations

import pathlib

import pytest
from absl import flags
from ml_collections import config_flags

from experiments.configs import CONFIG_DIR, install_config_path_fallback, resolve_config_path


@pytest.fixture(autouse=True)
def _fallback():
    """The fallback, as every launcher installs it (experiments.launch.define_common_flags)."""
    install_config_path_fallback()


def test_resolves_relative_paths_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = str(CONFIG_DIR / "quickstart.py")
    assert pathlib.Path(packaged).is_file()
    for spec in ("experiments/configs/quickstart.py", "configs/quickstart.py", "quickstart.py"):
        assert resolve_config_path(spec) == packaged
        assert resolve_config_path(spec + ":smoke") == packaged + ":smoke"
    # unknown names and absolute paths are left for ml_collections to report
    assert resolve_config_path("experiments/configs/nope.py") == "experiments/configs/nope.py"
    assert resolve_config_path("/no/such/quickstart.py") == "/no/such/quickstart.py"
    assert resolve_config_path("experiments/configs/__init__.py") == (
        "experiments/configs/__init__.py"
    )


def test_existing_path_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = tmp_path / "experiments" / "configs" / "quickstart.py"
    own.parent.mkdir(parents=True)
    own.write_text(
        "import ml_collections\n\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict({'mine': 1})\n"
    )
    assert resolve_config_path("experiments/configs/quickstart.py:x") == (
        "experiments/configs/quickstart.py:x"
    )
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values)
    values(["prog", "--config=experiments/configs/quickstart.py"])
    assert values.config.mine == 1


def test_config_flag_loads_packaged_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [
        "prog",
        "--config=experiments/configs/quickstart.py:smoke",
        "--config.train.num_steps=3",
    ]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
    values(argv)
    assert values.config.variant == "smoke" and values.config.train.num_steps == 3


def test_missing_config_still_fails(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=values)
    values(["prog", "--config=experiments/configs/nope.py"])
    with pytest.raises(IOError, match="nope"):
        _ = values.config.train.num_steps
