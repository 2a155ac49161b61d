"""absl launchers, one per paper table/figure; their configs are in ``experiments/configs``."""

from experiments.configs import install_config_path_fallback

# --config=experiments/configs/NAME.py works from any directory after a non-editable install.
install_config_path_fallback()
