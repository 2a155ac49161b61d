"""Config for experiments/quickstart.py: a small beta-VAE on rendered dSprites (paper Fig. 1).

Variants (:mod:`experiments.configs.common`): ``cpu`` (default; 800 steps, ~8 minutes on a
2-core CPU) and ``smoke`` (30 steps, seconds). Fig. 1 is qualitative and has no paper-scale
setting, so there is no separate ``full``: ``full`` (the old name of the default) and
``small`` (the old name of ``smoke``) are aliases.
"""

import ml_collections

from experiments.configs.common import parse_variant
from vae_xai.workdir import Fields

VARIANTS = ("smoke", "cpu")
ALIASES = {"small": "smoke", "full": "cpu"}

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# figure settings and the checkpoint/log periods may differ; anything else is another run.
FIELDS = Fields(
    num_steps="num_steps",
    eval=("layer", "num_samples", "max_latents_shown"),
    schedule=("checkpoint_every", "log_every"),
)


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


def validate(config: ml_collections.ConfigDict) -> None:
    """Every field that could fail later, checked before any work (names the field)."""
    from vae_xai import validation as v
    from vae_xai.models import dsprites_vae

    v.at_least(config, "latent_dim", 1)
    v.at_least(config, "batch_size", 1)
    v.at_least(config, "num_steps", 1)
    v.at_least(config, "checkpoint_every", 1)
    v.at_least(config, "log_every", 1)
    v.positive(config, "learning_rate")
    v.at_least(config, "num_samples", 1)
    v.at_least(config, "max_latents_shown", 1)
    if config.beta < 0:
        raise v.ConfigError("beta", f"must be >= 0; got {config.beta}")
    v.model_layers(dsprites_vae(config.latent_dim), (64, 64, 1), [config.layer], "layer")
