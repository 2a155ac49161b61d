"""Quickstart: train a small VAE on dSprites rendered on the fly and explain each latent.

    python -m experiments.quickstart --workdir=workdirs/quickstart

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

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

from data_pipelines import dsprites_gt
from experiments.configs.quickstart import FIELDS, validate
from vae_xai import attention as att
from vae_xai import losses, plots, train
from vae_xai import workdir as workdir_lib
from vae_xai.encoder_split import split_encoder
from vae_xai.models import dsprites_vae

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    str(pathlib.Path(__file__).parent / "configs" / "quickstart.py"),
    "ml_collections config file[:variant].",
)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/quickstart", "Output folder.")


def run(cfg, workdir: str | pathlib.Path, *, progress: bool = True) -> dict:
    """Validate, check the workdir's run record, train (or resume), write the figures and
    ``results.json`` of this evaluation; returns the results."""
    validate(cfg)
    run_ = workdir_lib.start(
        workdir,
        cfg,
        experiment="quickstart",
        fields=FIELDS,
        data={"dataset": "dSprites, rendered", **workdir_lib.renderer_identity()},
    )
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
    out = model.apply(variables, images)
    kl_per_dim = np.asarray(jnp.mean(losses.kl_per_latent(out["mu"], out["logvar"]), axis=0))
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
    elbo = losses.bernoulli_nll(out["logits"], images) + losses.gaussian_kl(
        out["mu"], out["logvar"]
    )
    results = {
        "config": cfg.to_dict(),
        "device": str(jax.devices()[0]),
        "steps": cfg.num_steps,
        "held_out_negative_elbo": float(jnp.mean(elbo)),
        "kl_per_latent": {str(i): float(v) for i, v in enumerate(kl_per_dim)},
        "active_latents(kl>0.1)": int((kl_per_dim > 0.1).sum()),
        "figures": [str(grid), str(recs)],
    }
    return evaluation.save_results(results)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    results = run(_CONFIG.value, _WORKDIR.value)
    shown = {k: v for k, v in results.items() if k not in ("config", "run", "evaluation")}
    print(json.dumps(shown, indent=2))


if __name__ == "__main__":
    app.run(main)
