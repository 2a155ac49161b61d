"""Quickstart: train a small VAE on dSprites rendered on the fly and explain each latent.

(the library side of ``python -m experiments.quickstart --workdir=workdirs/quickstart``.)

No download: images come from :func:`data_pipelines.dsprites.render`. Writes
``workdir/latent_attention.png`` (paper Fig. 1: one row per latent dimension, its attention
map over several samples; a latent that encodes position follows the sprite, one that encodes
shape or scale attends to its outline), ``workdir/reconstructions.png`` and
``workdir/results.json`` (final losses and the KL of each latent dimension); these are links
into the evaluation's own folder ``workdir/evaluations/step<N>_<hash>/``. A second run on
the same workdir resumes from its checkpoint; a larger ``--config.num_steps`` continues it,
and a change of anything that changes training is refused (see :mod:`vae_xai.workdir`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from data_pipelines import dsprites_gt
from vae_xai import attention as att
from vae_xai import losses, plots, train, validation
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.encoder_split import split_encoder
from vae_xai.experiments.dsprites_renderer import renderer_identity
from vae_xai.models import dsprites_vae
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# figure settings and the checkpoint/log periods may differ; anything else is another run.
FIELDS = Fields(
    num_steps="num_steps",
    eval=("layer", "num_samples", "max_latents_shown"),
    schedule=("checkpoint_every", "log_every"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Every field that could fail later, checked before any work (names the field)."""
    validation.at_least(config, "latent_dim", 1)
    validation.at_least(config, "batch_size", 1)
    validation.at_least(config, "num_steps", 1)
    validation.at_least(config, "checkpoint_every", 1)
    validation.at_least(config, "log_every", 1)
    validation.positive(config, "learning_rate")
    validation.at_least(config, "num_samples", 1)
    validation.at_least(config, "max_latents_shown", 1)
    if config.beta < 0:
        raise validation.ConfigError("beta", f"must be >= 0; got {config.beta}")
    validation.model_layers(dsprites_vae(config.latent_dim), (64, 64, 1), [config.layer], "layer")


EXPERIMENT = "quickstart"


def train_and_evaluate(
    cfg: Any,
    workdir: str | pathlib.Path,
    *,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate, check the workdir's run record, train (or resume), write the figures and
    ``results.json`` (the results schema) of this evaluation; returns what was written.

    ``seeds``: each seed one run in ``workdir/seed_N``, aggregated (:mod:`vae_xai.seeds`);
    ``None``: ``cfg.seed`` in ``workdir`` (``workdir/latent_attention.png``).
    """
    validate(cfg)
    data = {"dataset": "dSprites, rendered", **renderer_identity()}

    def one(c: Any, wd: str | pathlib.Path) -> dict[str, Any]:
        return _train_and_evaluate_one(c, wd, data=data, progress=progress)

    if seeds is None:
        return one(cfg, workdir)
    return seeds_lib.run_seeds(workdir, cfg, seeds, one, experiment=EXPERIMENT, fields=FIELDS)


def _train_and_evaluate_one(
    cfg: Any, workdir: str | pathlib.Path, *, data: dict[str, Any], progress: bool
) -> dict[str, Any]:
    run_ = workdir_lib.start(workdir, cfg, experiment=EXPERIMENT, fields=FIELDS, data=data)
    model = dsprites_vae(cfg.latent_dim)
    batch_fn = dsprites_gt.make_batch_fn(cfg.seed, cfg.batch_size)
    optimizer = optax.adam(cfg.learning_rate)
    state, _ = train.train(
        train.init_state(model, optimizer, (64, 64, 1), key=jax.random.key(cfg.seed)),
        train.vae_update_fn(model, optimizer, beta=cfg.beta),
        batch_fn,
        workdir=run_.workdir,
        num_steps=cfg.num_steps,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        log_every=cfg.log_every,
        progress=progress,
    )
    variables = {"params": state.params}
    evaluation = run_.evaluation(run_.eval_config(cfg), step=cfg.num_steps)

    # held-out samples (a seed the training stream never uses for step 0..num_steps)
    images = dsprites_gt.make_batch_fn(cfg.seed + 1, 256)(0)["image"]

    @jax.jit  # one compiled program (eager, this was ~6 s of small compiles on a 2-core CPU)
    def held_out(variables, x):
        out = model.apply(variables, x)
        kl = jnp.mean(losses.kl_per_latent(out["mu"], out["logvar"]), axis=0)
        elbo = losses.bernoulli_nll(out["logits"], x) + losses.gaussian_kl(out["mu"], out["logvar"])
        return out, kl, jnp.mean(elbo)

    out, kl_per_dim, mean_elbo = held_out(variables, images)
    kl_per_dim = np.asarray(kl_per_dim)
    order = [int(i) for i in np.argsort(-kl_per_dim)[: cfg.max_latents_shown]]

    shown = images[: cfg.num_samples]

    @jax.jit
    def maps_for(x):
        split = split_encoder(model, variables, x, layer=cfg.layer, method="encode")
        maps = att.latent_attention(split.head_fn, split.features)  # score = mu
        return att.upsample(maps, x.shape[1:3])

    maps = maps_for(shown)
    labels = [f"z{i}\nKL {kl_per_dim[i]:.2f}" for i in order]
    grid = plots.save_latent_grid(
        evaluation.dir / "latent_attention.png",
        shown,
        np.asarray(maps),
        latent_ids=order,
        latent_labels=labels,
        title=f"Per-latent attention ({cfg.layer}, {cfg.num_steps} steps)",
    )
    recon = jax.nn.sigmoid(out["logits"][: cfg.num_samples])
    recs = plots.save_image_rows(
        evaluation.dir / "reconstructions.png",
        {"input": list(shown), "reconstruction": list(recon)},
    )
    results = {
        "steps": cfg.num_steps,
        "held_out_negative_elbo": float(mean_elbo),
        "kl_per_latent": {str(i): float(v) for i, v in enumerate(kl_per_dim)},
        "active_latents(kl>0.1)": int((kl_per_dim > 0.1).sum()),
        "figures": [str(grid), str(recs)],
    }
    return evaluation.save_results(results)
