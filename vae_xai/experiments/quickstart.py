"""Quickstart: train a small VAE on dSprites rendered on the fly and explain each latent.

(the library side of ``python -m experiments.quickstart --workdir=workdirs/quickstart``.)

No download: images come from :func:`data_pipelines.dsprites.render`. Writes
``workdir/latent_attention.png`` (paper Fig. 1: one row per latent dimension, its attention
map over several samples; a latent that encodes position follows the sprite, one that encodes
shape or scale attends to its outline), ``workdir/reconstructions.png`` and
``workdir/results.json`` (final losses and the KL of each latent dimension); these are links
into the evaluation's own folder ``workdir/evaluations/step<N>_<hash>/``. A second run on
the same workdir resumes from its checkpoint; a larger ``--config.train.num_steps`` continues it,
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
from vae_xai import losses, plots, validation
from vae_xai import train as train_lib
from vae_xai import workdir as workdir_lib
from vae_xai.encoder_split import split_encoder
from vae_xai.experiments import template
from vae_xai.experiments.dsprites_renderer import renderer_identity
from vae_xai.models import dsprites_vae
from vae_xai.workdir import Fields

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# figure settings and the checkpoint/log periods may differ; anything else is another run.
FIELDS = Fields(
    num_steps="train.num_steps",
    eval=("eval",),
    schedule=("train.checkpoint_every", "train.log_every"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Check every field that could fail later, before any work.

    Args:
      config: the experiment config.

    Raises:
      ConfigError: naming the first bad field.
    """
    validation.at_least(config, "model.latent_dim", 1)
    for field in ("batch_size", "num_steps", "checkpoint_every", "log_every"):
        validation.at_least(config, f"train.{field}", 1)
    validation.positive(config, "train.learning_rate")
    validation.at_least(config, "eval.num_samples", 1)
    validation.at_least(config, "eval.max_latents_shown", 1)
    if config.train.beta < 0:
        raise validation.ConfigError("train.beta", f"must be >= 0; got {config.train.beta}")
    validation.model_layers(
        dsprites_vae(config.model.latent_dim), (64, 64, 1), [config.eval.layer], "eval.layer"
    )


NAME = "quickstart"


def inputs(config: ml_collections.ConfigDict, *, progress: bool = True) -> template.Inputs:
    """The renderer's identity (images are rendered on the fly: nothing to check on disk).

    Args:
      config: the experiment config.
      progress: show progress bars.

    Returns:
      The :class:`~vae_xai.experiments.template.Inputs`.
    """
    return template.Inputs(
        data={"dataset": "dSprites, rendered", **renderer_identity()},
        values={"progress": progress},
    )


def train(
    config: ml_collections.ConfigDict, run: workdir_lib.Run, inputs: template.Inputs
) -> template.Trained:
    """Train (or resume) the beta-VAE on batches rendered from random factors.

    Args:
      config: the experiment config.
      run: the run.
      inputs: the launcher's arguments (:func:`inputs`).

    Returns:
      The :class:`~vae_xai.experiments.template.Trained`.
    """
    t = config.train
    model = dsprites_vae(config.model.latent_dim)
    batch_fn = dsprites_gt.make_batch_fn(config.seed, t.batch_size)
    optimizer = optax.adam(t.learning_rate)
    state, info = train_lib.train(
        train_lib.init_state(model, optimizer, (64, 64, 1), key=jax.random.key(config.seed)),
        train_lib.vae_update_fn(model, optimizer, beta=t.beta),
        batch_fn,
        workdir=run.workdir,
        num_steps=t.num_steps,
        seed=config.seed,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
        progress=inputs.values["progress"],
    )
    return template.Trained(step=t.num_steps, model=(model, state), info=info)


def evaluate(
    config: ml_collections.ConfigDict,
    run: workdir_lib.Run,
    trained: template.Trained,
    inputs: template.Inputs,
    evaluation: workdir_lib.Evaluation,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out ELBO and per-latent KL; the per-latent attention figure (Fig. 1), reconstructions.

    Args:
      config: the experiment config.
      run: the run.
      trained: the trained model.
      inputs: the launcher's arguments.
      evaluation: the evaluation folder (the figures go there).

    Returns:
      ``(result, extra)``: the seed's numbers and the top-level entries of its results.json.
    """
    model, state = trained.model
    e = config.eval
    variables = {"params": state.params}
    # held-out samples (a seed the training stream never uses for step 0..num_steps)
    images = dsprites_gt.make_batch_fn(config.seed + 1, 256)(0)["image"]

    @jax.jit  # one compiled program instead of many small ones
    def held_out(variables, x):
        out = model.apply(variables, x)
        kl = jnp.mean(losses.kl_per_latent(out["mu"], out["logvar"]), axis=0)
        elbo = losses.bernoulli_nll(out["logits"], x) + losses.gaussian_kl(out["mu"], out["logvar"])
        return out, kl, jnp.mean(elbo)

    out, kl_per_dim, mean_elbo = held_out(variables, images)
    kl_per_dim = np.asarray(kl_per_dim)
    order = [int(i) for i in np.argsort(-kl_per_dim)[: e.max_latents_shown]]

    shown = images[: e.num_samples]

    @jax.jit
    def maps_for(x):
        split = split_encoder(model, variables, x, layer=e.layer, method="encode")
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
        title=f"Per-latent attention ({e.layer}, {trained.step} steps)",
    )
    recon = jax.nn.sigmoid(out["logits"][: e.num_samples])
    recs = plots.save_image_rows(
        evaluation.dir / "reconstructions.png",
        {"input": list(shown), "reconstruction": list(recon)},
    )
    results = {
        "steps": trained.step,
        "held_out_negative_elbo": float(mean_elbo),
        "kl_per_latent": {str(i): float(v) for i, v in enumerate(kl_per_dim)},
        "active_latents(kl>0.1)": int((kl_per_dim > 0.1).sum()),
        "figures": [str(grid), str(recs)],
    }
    return results, {}


EXPERIMENT = template.Experiment(
    name=NAME, fields=FIELDS, validate=validate, inputs=inputs, train=train, evaluate=evaluate
)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) and explain each latent (:func:`template.run`).

    Args:
      config: ``experiments/configs/quickstart.py``'s config.
      workdir: the run folder (one per seed with ``seeds``).
      seeds: several seeds, each a run in ``workdir/seed_N``; ``None``: ``config.seed``.
      progress: show progress bars.

    Returns:
      The ``results.json`` written (:func:`template.run`).
    """
    return template.run(EXPERIMENT, config, workdir, seeds=seeds, progress=progress)
