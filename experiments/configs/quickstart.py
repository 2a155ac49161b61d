"""Config for experiments/quickstart.py: a small beta-VAE on rendered dSprites (paper Fig. 1).

Variants (:mod:`experiments.configs.common`): ``cpu`` (default; 800 steps, ~8 minutes on a
2-core CPU) and ``smoke`` (30 steps, seconds). Fig. 1 is qualitative and has no paper-scale
setting, so there is no separate ``full``: ``full`` (the old name of the default) and
``small`` (the old name of ``smoke``) are aliases.
"""

import ml_collections

from experiments.configs.common import parse_variant

VARIANTS = ("smoke", "cpu")
ALIASES = {"small": "smoke", "full": "cpu"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = parse_variant(
        arg, variants=VARIANTS, default="cpu", aliases=ALIASES, config="quickstart"
    ).name
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.latent_dim = 10
    c.beta = 4.0  # beta-VAE: pushes towards axis-aligned latents, so per-latent maps differ
    c.batch_size = 64
    c.learning_rate = 5e-4
    c.num_steps = 800
    c.checkpoint_every = 200
    c.log_every = 50
    c.layer = "conv2"  # 16x16 feature map of the 64x64 input
    c.num_samples = 8  # columns of the figure
    c.max_latents_shown = 10
    if variant == "smoke":
        c.num_steps = 30
        c.checkpoint_every = 15
        c.log_every = 10
        c.num_samples = 4
    return c
