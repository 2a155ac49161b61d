"""Config for experiments/quickstart.py: a small beta-VAE on rendered dSprites (paper Fig. 1).

Variants (:mod:`experiments.configs.common`): ``cpu`` (default; 800 steps of batch 64,
minutes on a CPU) and ``smoke`` (30 steps, seconds). Fig. 1 is qualitative and has no
paper-scale setting, so there is no separate ``full``.
"""

import ml_collections

from experiments.configs.common import parse_variant

VARIANTS = ("smoke", "cpu")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Build the quickstart config.

    Args:
      arg: what follows ``:`` in ``--config=PATH:arg``: ``smoke`` or ``cpu``, default ``cpu``;
        see the module doc.

    Returns:
      The config.

    Raises:
      ValueError: an unknown variant (:func:`experiments.configs.common.parse_variant`).
    """
    variant = parse_variant(arg, variants=VARIANTS, default="cpu", config="quickstart").name
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(latent_dim=10))
    c.train = ml_collections.ConfigDict(
        dict(
            num_steps=800,
            batch_size=64,
            learning_rate=5e-4,
            beta=4.0,  # beta-VAE: pushes towards axis-aligned latents, so per-latent maps differ
            checkpoint_every=200,
            log_every=50,
        )
    )
    c.eval = ml_collections.ConfigDict(
        dict(
            layer="conv2",  # 16x16 feature map of the 64x64 input
            num_samples=8,  # columns of the figure
            max_latents_shown=10,
        )
    )
    if variant == "smoke":
        c.train.num_steps = 30
        c.train.checkpoint_every = 15
        c.train.log_every = 10
        c.eval.num_samples = 4
    return c
