"""Config for experiments/quickstart.py: a small beta-VAE on rendered dSprites (paper Fig. 1).

Variants: ``full`` (default; a couple of minutes on a laptop CPU) and ``small`` (a smoke run).
"""

import ml_collections


def get_config(arg: str = "full") -> ml_collections.ConfigDict:
    if arg not in ("full", "small"):
        raise ValueError(f"unknown config variant {arg!r}; use 'full' or 'small'")
    c = ml_collections.ConfigDict()
    c.variant = arg
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
    if arg == "small":
        c.num_steps = 30
        c.checkpoint_every = 15
        c.log_every = 10
        c.num_samples = 4
    return c
