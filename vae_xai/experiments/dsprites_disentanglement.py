"""Paper Table 3 and Figure 8: beta-VAE, FactorVAE and AD-FactorVAE on dSprites.

The library side of ``python -m experiments.dsprites_disentanglement`` (usage there).

Each seed is one run in ``workdir/seed_N`` (``config.seed = N``; :mod:`vae_xai.seeds`),
trained on batches rendered on device from uniformly random factors (``batch_fn(step)``
seeded by the step). Then the encoder mean is scored with the FactorVAE metric, the beta-VAE
score and MIG (:mod:`vae_xai.metrics.disentanglement`) on images rendered from factor values;
the seed's evaluation folder ``workdir/seed_N/evaluations/step<N>_<hash>/`` gets
``results.json``, ``traversal.png`` (latent traversals) and ``attention_pairs.png`` (Figure 8:
attention maps of the two top latent dims for a few inputs; ``attention_pairs_vs_<other>.png``
with ``--compare_workdir``), and ``workdir/results.json`` aggregates the seeds (``summary``:
mean / std of the headline numbers) next to the paper's numbers. Another method or model on
a trained seed's run is refused before any work (:mod:`vae_xai.workdir`).
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from data_pipelines.dsprites_gt import DSpritesGroundTruth, make_batch_fn
from vae_xai import disentangle as dis
from vae_xai import ensemble as ensemble_lib
from vae_xai import losses, plots, train, validation
from vae_xai import results as results_lib
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import paper, template
from vae_xai.experiments.dsprites_renderer import renderer_identity
from vae_xai.metrics import disentanglement as metrics_lib
from vae_xai.metrics.disentanglement import tabulated
from vae_xai.models.conv_vae import dsprites_vae
from vae_xai.models.factor_vae import FactorDiscriminator, init_factor_vae
from vae_xai.train import TrainState, create_state, restore_params, vae_update_fn
from vae_xai.workdir import Fields

METHODS = ("beta_vae", "factorvae", "ad_factorvae")

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# metric and figure settings and the checkpoint/log periods may differ; anything else is
# another run.
FIELDS = Fields(
    num_steps="train.num_steps",
    eval=("eval", "figure"),
    schedule=("train.checkpoint_every", "train.keep_every", "train.log_every"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Check every field that could fail later, before any work.

    Args:
      config: the experiment config (``experiments/configs/dsprites_disentanglement.py``).

    Raises:
      ConfigError: naming the first bad field.
    """
    validation.one_of(config, "method", METHODS)
    # L_AD and the figure need two latent dims
    validation.at_least(config, "model.latent_dim", 2)
    t = config.train
    for field in ("num_steps", "batch_size", "checkpoint_every", "log_every"):
        validation.at_least(config, f"train.{field}", 1)
    validation.at_least(config, "train.keep_every", 0)
    if t.keep_every % t.checkpoint_every:
        raise validation.ConfigError(
            "train.keep_every",
            f"must be a multiple of train.checkpoint_every={t.checkpoint_every} (a kept step "
            f"must be a saved step); got {t.keep_every}",
        )
    validation.positive(config, "optim.vae_lr", "optim.disc_lr")
    validation.one_of(config, "train.disc_batch", ("independent", "same"))
    if config.method == "factorvae" and config.ad.weight > 0:
        raise validation.ConfigError(
            "ad.weight", "> 0 with method 'factorvae' is AD-FactorVAE: use the ad_factorvae config"
        )
    if config.method == "ad_factorvae" and config.ad.weight <= 0:
        raise validation.ConfigError(
            "ad.weight", "method 'ad_factorvae' needs ad.weight > 0 (Eq. 7)"
        )
    validation.one_of(config, "ad.pair", ("attention", "kl", "abs_mu", "random", "all"))
    validation.one_of(config, "ad.score", ("sample", "mean"))
    model = dsprites_vae(config.model.latent_dim)
    validation.model_layers(model, (64, 64, 1), [config.ad.layer], "ad.layer")
    if config.ad.dense_after:
        validation.model_layers(
            model, (64, 64, 1), [config.ad.dense_after], "ad.dense_after", feature_map=False
        )
    validation.subset(config, "eval.metrics", ("factor_vae", "beta_vae", "mig"), allow_empty=True)
    validation.at_least(config, "eval.overlap_batch", 1)
    validation.one_of(config, "eval.tabulate", TABULATE)
    validation.at_least(config, "figure.num_inputs", 1)
    validation.at_least(config, "figure.traversal_steps", 2)


TABULATE = ("auto", "always", "never")  # eval.tabulate (tabulated_metrics)

DATA_SEED_OFFSET = 1_000_003  # data stream != the per-step key stream of jit_step


# ------------------------------------------------------------------------- building blocks


def build(config: ml_collections.ConfigDict, seed: int):
    """Model, initial state and update function of ``config.method`` for one seed.

    Args:
      config: the experiment config.
      seed: the seed of the parameter initialization.

    Returns:
      ``(model, state, update_fn, batch_keys)``; ``state.params`` is the VAE's params for
      beta-VAE and ``{"vae": ..., "disc": ...}`` otherwise; ``batch_keys`` the image keys each
      batch holds (a second, independent batch for the discriminator with
      ``train.disc_batch="independent"``).

    Raises:
      ValueError: an unknown method, or a method and ``ad.weight``/``train.disc_batch`` that
        do not go together.
    """
    if config.method not in METHODS:
        raise ValueError(f"config.method must be one of {METHODS}; got {config.method!r}")
    model = dsprites_vae(config.model.latent_dim)
    key = jax.random.key(seed)
    o = config.optim
    if config.method == "beta_vae":
        params = jax.jit(model.init)(key, jnp.zeros((1, 64, 64, 1)))["params"]
        optimizer = optax.adam(o.vae_lr, b1=o.vae_b1, b2=o.vae_b2)
        update = vae_update_fn(model, optimizer, beta=config.train.beta)
        return model, create_state(params, optimizer), update, ("image",)

    if config.method == "factorvae" and config.ad.weight > 0:
        raise ValueError(
            "method 'factorvae' with ad.weight > 0 is AD-FactorVAE: use the ad_factorvae config"
        )
    if config.method == "ad_factorvae" and config.ad.weight <= 0:
        raise ValueError("method 'ad_factorvae' needs ad.weight > 0 (lambda of Eq. 7)")
    if config.train.disc_batch not in ("independent", "same"):
        raise ValueError(
            f'train.disc_batch must be "independent" or "same"; got {config.train.disc_batch!r}'
        )
    disc = FactorDiscriminator(
        hidden=config.disc.hidden,
        num_layers=config.disc.num_layers,
        negative_slope=config.disc.negative_slope,
    )
    params = jax.jit(
        lambda k: init_factor_vae(
            k, model, disc, input_shape=(64, 64, 1), latent_dim=config.model.latent_dim
        )
    )(key)
    optimizer = dis.factor_vae_optimizer(
        vae_lr=o.vae_lr,
        vae_b1=o.vae_b1,
        vae_b2=o.vae_b2,
        disc_lr=o.disc_lr,
        disc_b1=o.disc_b1,
        disc_b2=o.disc_b2,
    )
    independent = config.train.disc_batch == "independent"
    update = dis.factor_vae_update_fn(
        model,
        disc,
        optimizer,
        gamma=config.train.gamma,
        ad_weight=config.ad.weight,
        ad_layer=config.ad.layer,
        ad_dense_after=config.ad.dense_after or None,
        ad_pair=config.ad.pair,
        ad_score=config.ad.score,
        ad_upsample=config.ad.upsample,
        ad_eps=config.ad.eps,
        disc_image_key="image_disc" if independent else None,
    )
    keys = ("image", "image_disc") if independent else ("image",)
    return model, create_state(params, optimizer), update, keys


def vae_params_of(state: TrainState) -> Any:
    """The VAE's parameters from a beta-VAE or (AD-)FactorVAE state.

    Args:
      state: a state of :func:`build`.

    Returns:
      The VAE's params (without the discriminator's).
    """
    params = state.params
    return params["vae"] if isinstance(params, dict) and "disc" in params else params


def train_seed(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, seed: int
) -> tuple[Any, TrainState, float]:
    """Train (or resume) one seed in ``workdir``.

    Args:
      config: the experiment config.
      workdir: the seed's run folder.
      seed: the seed (initialization, data stream, step keys).

    Returns:
      ``(model, state, total training wall seconds)``; :func:`vae_xai.train.train`
      accumulates the wall time (compilation included) over resumed calls in
      ``workdir/train_wall.json``.
    """
    t = config.train
    model, state, update, keys = build(config, seed)
    batch_fn = make_batch_fn(DATA_SEED_OFFSET + seed, t.batch_size, keys=keys)
    state, info = train.train(
        state,
        update,
        batch_fn,
        workdir=workdir,
        num_steps=t.num_steps,
        seed=seed,
        checkpoint_every=t.checkpoint_every,
        keep_every=t.keep_every or None,
        log_every=t.log_every,
    )
    return model, state, info["total_wall_s"]


ENSEMBLE_DIR = "ensemble"


def train_ensemble(config: ml_collections.ConfigDict, workdir: pathlib.Path, seeds: Sequence[int]):
    """Train (or resume) all ``seeds`` as one vmapped step (:mod:`vae_xai.ensemble`).

    Trained in ``workdir/ensemble``; each member is exported as the ordinary checkpoint of
    ``workdir/seed_N``, so :func:`train_seed` then finds it trained. Member ``i`` equals the
    separate run of its seed to float tolerance (``tests/test_ensemble.py``).

    Args:
      config: the experiment config (shared by the seeds).
      workdir: the folder of one run per seed.
      seeds: the seeds.

    Raises:
      WorkdirError: a seed was trained separately and there is no ensemble checkpoint.
    """
    t = config.train
    ens_dir = workdir / ENSEMBLE_DIR
    if workdir_lib.trained_step(ens_dir) is None:
        started = [s for s in seeds if workdir_lib.trained_step(workdir / f"seed_{s}") is not None]
        if started:
            raise workdir_lib.WorkdirError(
                f"{workdir}: seeds {started} were trained separately (seed_N/checkpoints) and "
                "there is no ensemble checkpoint: continue them without --ensemble, or use "
                "another --workdir"
            )
    built = [build(config, seed) for seed in seeds]
    states = [b[1] for b in built]
    update, keys = built[0][2], built[0][3]
    batch_fns = [make_batch_fn(DATA_SEED_OFFSET + seed, t.batch_size, keys=keys) for seed in seeds]
    t0 = time.time()
    ensemble_lib.fit_ensemble(
        states,
        update,
        batch_fns,
        seeds=list(seeds),
        workdir=ens_dir,
        member_workdirs=[workdir / f"seed_{s}" for s in seeds],
        num_steps=t.num_steps,
        checkpoint_every=t.checkpoint_every,
        log_every=t.log_every,
    )
    logging.info("ensemble of seeds %s trained in %.0f s", list(seeds), time.time() - t0)


def check_compare_run(workdir: pathlib.Path, seeds: Sequence[int]) -> None:
    """Check another finished run before any work.

    ``workdir/seed_N`` must be a trained ``dsprites_disentanglement`` run for every seed.

    Args:
      workdir: the other run's folder (``--compare_workdir``).
      seeds: the seeds that will run.

    Raises:
      FileNotFoundError: a seed's ``run.json`` is missing.
      ValueError: a seed is another experiment's run or not trained to its ``num_steps``.
    """
    for seed in seeds:
        load_config(workdir, seed)


def load_config(workdir: pathlib.Path, seed: int) -> ml_collections.ConfigDict:
    """The recorded config of one seed of another finished run (``seed_N/run.json``).

    Args:
      workdir: the other run's folder.
      seed: the seed.

    Returns:
      Its last config.

    Raises:
      FileNotFoundError: no ``seed_N/run.json``.
      ValueError: another experiment's run, or not trained to its ``train.num_steps``.
    """
    seed_dir = pathlib.Path(workdir) / f"seed_{seed}"
    path = seed_dir / workdir_lib.RUN_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"--compare_workdir: {path} not found: is {workdir} a dsprites_disentanglement run "
            f"of seed {seed} (--seeds)?"
        )
    record = json.loads(path.read_text())
    if record.get("experiment") != NAME:
        raise ValueError(
            f"--compare_workdir: {seed_dir} holds a {record.get('experiment')!r} run, not a "
            f"{NAME} run"
        )
    config = ml_collections.ConfigDict(record.get("last_config", record["config"]))
    step = workdir_lib.trained_step(seed_dir)
    if step != config.train.num_steps:
        raise ValueError(
            f"--compare_workdir: seed {seed} of {workdir} is trained to step {step}, not "
            f"to its train.num_steps={config.train.num_steps}; finish it first"
        )
    return config


def load_run(workdir: pathlib.Path, seed: int) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """The model and trained VAE parameters of one seed of another finished run.

    Args:
      workdir: the other run's folder.
      seed: the seed.

    Returns:
      ``(model, vae_params, config)``.
    """
    config = load_config(workdir, seed)
    model, state, _, _ = build(config, seed)
    state = restore_params(pathlib.Path(workdir) / f"seed_{seed}", state)
    return model, vae_params_of(state), config


# ------------------------------------------------------------------------------ evaluation


def evaluate(
    config: ml_collections.ConfigDict,
    model: Any,
    vae_params: Any,
    seed: int,
    gt: DSpritesGroundTruth | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """The metrics on the encoder mean, plus the mean top-2 attention overlap.

    Scores ``config.eval.metrics`` (FactorVAE score, beta-VAE score, MIG;
    :mod:`vae_xai.metrics.disentanglement`) with their ``config.eval.<metric>`` settings.

    Args:
      config: the experiment config.
      model: the VAE.
      vae_params: its parameters.
      seed: the seed (offsets the metrics' random stream by ``eval.seed_offset``).
      gt: the ground truth the metrics sample from; default the renderer, or
        ``DSpritesGroundTruth.from_official(path)`` to score on the official images.
      progress: a progress bar while every image is encoded (``eval.tabulate``).

    Metrics that :func:`tabulated_metrics` names read their draws from a table of all
    737,280 encoded images (the same scores; about a quarter of the time at standard sizes).

    Returns:
      ``{metric: result, "attention_overlap", "eval_wall_s": {metric or "table_<batch>":
      seconds}, "eval_images", "tabulated": [metric, ...]}``.

    Raises:
      ValueError: an unknown metric.
    """
    gt = DSpritesGroundTruth() if gt is None else gt
    rep = dis.representation_fn(model, vae_params)
    rng = np.random.default_rng(config.eval.seed_offset + seed)
    out: dict[str, Any] = {}
    timings: dict[str, float] = {}
    known = {"factor_vae", "beta_vae", "mig"}
    unknown = [n for n in config.eval.metrics if n not in known]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {sorted(known)}")
    by_metric = {}  # metric -> (table ground truth, table lookup)
    for batch, names in tabulated_metrics(config, gt).items():
        t = time.time()
        bar = progress and jax.process_index() == 0
        table = tabulated.tabulate(gt, rep, batch_size=batch, progress=bar)
        by_metric.update({n: table for n in names})
        timings[f"table_{batch}"] = time.time() - t
        logging.info(
            "seed %d: all %d images encoded in batches of %d for %s (%.0f s)",
            seed, tabulated.num_combinations(gt), batch, ", ".join(names), time.time() - t,
        )  # fmt: skip
    for name in config.eval.metrics:
        t = time.time()
        kwargs = dict(config.eval[name])
        metric_gt, metric_rep = by_metric.get(name, (gt, rep))
        if name == "factor_vae":
            out[name] = metrics_lib.factor_vae_score(metric_gt, metric_rep, rng, **kwargs)
        elif name == "beta_vae":
            out[name] = metrics_lib.beta_vae_score(metric_gt, metric_rep, rng, **kwargs)
        else:
            out[name] = metrics_lib.mig(metric_gt, metric_rep, rng, **kwargs)
        timings[name] = time.time() - t
        logging.info("seed %d %s: %s (%.0f s)", seed, name, _short(out[name]), timings[name])
    out["attention_overlap"] = attention_overlap(config, model, vae_params, seed)
    out["eval_wall_s"] = timings
    out["eval_images"] = gt.source
    out["tabulated"] = sorted(by_metric)
    return out


def tabulated_metrics(
    config: ml_collections.ConfigDict, gt: DSpritesGroundTruth
) -> dict[int, list[str]]:
    """Which metrics :func:`evaluate` scores from a table of all images, by batch size.

    ``config.eval.tabulate``: ``"never"``; ``"always"`` (every metric, one table per batch
    size); ``"auto"``: the metrics sharing a batch size whose draws together outnumber the
    images (:func:`vae_xai.metrics.disentanglement.tabulated.planned_encodings`), i.e. where
    encoding every image once is cheaper. A table in the metric's own batch size gives the
    same representations, hence the same scores (:mod:`~vae_xai.metrics.disentanglement.
    tabulated`).

    Args:
      config: the experiment config.
      gt: the ground truth the metrics sample from.

    Returns:
      ``{batch_size: [metric, ...]}``; empty when nothing is tabulated.
    """
    mode = config.eval.get("tabulate", "auto")
    if mode not in TABULATE:
        raise validation.ConfigError("eval.tabulate", f"must be one of {TABULATE}; got {mode!r}")
    if mode == "never":
        return {}
    groups: dict[int, list[str]] = {}
    for name in config.eval.metrics:
        groups.setdefault(int(config.eval[name].batch_size), []).append(name)
    images = tabulated.num_combinations(gt)
    return {
        batch: names
        for batch, names in groups.items()
        if mode == "always"
        or sum(tabulated.planned_encodings(n, dict(config.eval[n])) for n in names) > images
    }


def _short(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not isinstance(v, list)}


def _inputs(n: int, seed: int) -> jax.Array:
    gt = DSpritesGroundTruth()
    return gt.sample_observations_from_factors(gt.sample_factors(n, np.random.default_rng(seed)))


def _maps_and_pairs(config, model, vae_params, x):
    """Upsampled maps ``(N, D, 64, 64)`` (mean score), top-2 pairs and their L_AD, per input."""
    maps, enc = dis.attention_maps(
        model,
        vae_params,
        x,
        layer=config.ad.layer,
        dense_after=config.ad.dense_after or None,
        score="mean",
        upsample_to=(64, 64),
    )
    pair_by = config.ad.pair if config.ad.pair in ("attention", "kl", "abs_mu") else "attention"
    pairs = dis.top_pairs(dis.pair_scores(maps, enc["mu"], enc["logvar"], method=pair_by))
    l_ad, _ = dis.pair_ad_loss(maps, enc["mu"], enc["logvar"], pair=pair_by)
    return maps, pairs, l_ad


def attention_overlap(config, model, vae_params, seed: int) -> dict[str, Any]:
    """Mean / std over images of L_AD between the two top latent dims (lower = separated).

    Args:
      config: the experiment config (``eval.overlap_batch`` images, ``ad`` settings).
      model: the VAE.
      vae_params: its parameters.
      seed: the seed (offsets the inputs' stream).

    Returns:
      ``{"mean", "std", "num_images"}`` and where the two maps lie
      (:func:`attention_mass_stats`: ``blank_fraction``, ``on_sprite_top1``,
      ``on_sprite_top2``, ``sprite_area``).
    """
    x = _inputs(config.eval.overlap_batch, 20_000 + seed)
    maps, pairs, l_ad = jax.jit(lambda p, x: _maps_and_pairs(config, model, p, x))(vae_params, x)
    l_ad = np.asarray(l_ad)
    pair_maps = np.take_along_axis(np.asarray(maps), np.asarray(pairs)[:, :, None, None], axis=1)
    return {
        "mean": float(l_ad.mean()),
        "std": float(l_ad.std()),
        "num_images": int(l_ad.size),
        **attention_mass_stats(pair_maps, np.asarray(x)[..., 0] > 0.5),
    }


def attention_mass_stats(
    pair_maps: np.ndarray, masks: np.ndarray, blank_tol: float = 1e-6
) -> dict[str, float | None]:
    """Where the attention of the two top latents lies: on the sprite, beside it, or nowhere.

    L_AD (the overlap of the two maps) is also small when one map is blank (all zero after the
    ReLU) or when the maps sit on the background beside the sprite, so its value alone does not
    say the two latents attend to different parts of the object. This says which it is.

    Args:
      pair_maps: ``(N, 2, H, W)`` non-negative maps of each image's two top latent dims.
      masks: ``(N, H, W)`` booleans, True on the sprite.
      blank_tol: a map whose total is at most ``blank_tol`` times the larger total of its pair
        (or exactly zero) counts as blank.

    Returns:
      ``blank_fraction`` (images with a blank map in their pair), ``on_sprite_top1`` /
      ``on_sprite_top2`` (the share of a map's total that lies on the sprite, mean over the
      images where that map is not blank; None when it is blank on every image) and
      ``sprite_area`` (the mean share of pixels on the sprite: what a map spread evenly would
      put there).

    Raises:
      ValueError: shapes that do not match, non-finite or negative maps.
    """
    pair_maps = np.asarray(pair_maps, np.float64)
    masks = np.asarray(masks, bool)
    if pair_maps.ndim != 4 or pair_maps.shape[1] != 2:
        raise ValueError(f"pair_maps must be (N, 2, H, W); got {pair_maps.shape}")
    want = (pair_maps.shape[0], *pair_maps.shape[2:])
    if masks.shape != want:
        raise ValueError(f"masks must be (N, H, W) = {want}; got {masks.shape}")
    if not np.isfinite(pair_maps).all():
        raise ValueError("pair_maps has NaN or infinite values")
    if (pair_maps < 0).any():
        raise ValueError("pair_maps must be non-negative (rectified attention maps)")
    total = pair_maps.sum(axis=(2, 3))  # (N, 2)
    blank = (total <= blank_tol * total.max(axis=1, keepdims=True)) | (total == 0)
    on = (pair_maps * masks[:, None]).sum(axis=(2, 3)) / np.where(blank, 1.0, total)
    out = {"blank_fraction": float(blank.any(axis=1).mean())}
    for rank in range(2):
        keep = ~blank[:, rank]
        out[f"on_sprite_top{rank + 1}"] = float(on[keep, rank].mean()) if keep.any() else None
    out["sprite_area"] = float(masks.mean())
    return out


def checkpoint_attention_stats(run_dir: str | pathlib.Path, step: int) -> dict[str, Any]:
    """:func:`attention_overlap` of one seed's checkpoint, with that run's own config and seed.

    For kept checkpoints scored before :func:`attention_mass_stats` existed; a new evaluation
    records the same numbers under ``attention_overlap``.

    Args:
      run_dir: one seed's folder of a dSprites workdir (``WORKDIR/seed_N``: ``run.json`` and
        ``checkpoints/``).
      step: the checkpoint step (a kept one).

    Returns:
      ``{"run_dir", "method", "seed", "step", "attention_overlap": {...}}``.

    Raises:
      FileNotFoundError: no ``run.json`` in ``run_dir``.
      ValueError: ``run_dir`` is not named ``seed_N``, or is not a dSprites run.
    """
    run_dir = pathlib.Path(run_dir)
    name = run_dir.resolve().name
    if not (name.startswith("seed_") and name[5:].isdigit()):
        raise ValueError(f"{run_dir}: expected one seed's folder of a workdir (WORKDIR/seed_N)")
    record = run_dir / workdir_lib.RUN_FILE
    if not record.is_file():
        raise FileNotFoundError(f"{record}: no such file")
    doc = json.loads(record.read_text())
    if doc.get("experiment") != "dsprites_disentanglement":
        kind = doc.get("experiment")
        raise ValueError(f"{record}: not a dsprites_disentanglement run ({kind!r})")
    config = ml_collections.ConfigDict(doc["config"])
    seed = int(name[5:])
    model, state, _, _ = build(config, seed)
    state = restore_params(run_dir, state, step=int(step))
    return {
        "run_dir": str(run_dir),
        "method": config.method,
        "seed": seed,
        "step": int(step),
        "attention_overlap": attention_overlap(config, model, vae_params_of(state), seed),
    }


def save_traversal(path: pathlib.Path, config, model, vae_params) -> None:
    """Latent traversals of one input: a row per dim (sorted by KL), values in +-limit.

    Args:
      path: the PNG.
      config: the experiment config (``figure.*``).
      model: the VAE.
      vae_params: its parameters.
    """
    x = _inputs(1, config.figure.input_seed)
    enc = model.apply({"params": vae_params}, x, method="encode")
    mu, logvar = np.asarray(enc["mu"][0]), np.asarray(enc["logvar"][0])
    kl = np.asarray(losses.kl_per_latent(mu, logvar))
    values = np.linspace(-config.figure.traversal_limit, config.figure.traversal_limit,
                         config.figure.traversal_steps)  # fmt: skip
    order = np.argsort(-kl)
    z = np.repeat(mu[None, None], len(order), 0).repeat(len(values), 1)  # (D, S, D)
    for r, d in enumerate(order):
        z[r, :, d] = values
    logits = model.apply(
        {"params": vae_params}, jnp.asarray(z.reshape(-1, mu.size)), method="decode"
    )
    images = np.asarray(jax.nn.sigmoid(logits)).reshape(len(order), len(values), 64, 64)
    rows = {f"z{d} KL={kl[d]:.2f}": list(images[r]) for r, d in enumerate(order)}
    plots.save_image_rows(
        path,
        {"input": [np.asarray(x[0])], **rows},
        col_titles=[f"{v:+.1f}" for v in values],
        title=f"{config.method}: latent traversals (rows sorted by KL)",
    )


_SHORT = {"beta_vae": "bVAE", "factorvae": "FV", "ad_factorvae": "AD-FV"}


def save_attention_pairs(path: pathlib.Path, runs: Sequence[tuple[str, Any, Any, Any]]) -> None:
    """Figure 8: for each run, the maps of its two top latent dims over the same inputs.

    Args:
      path: the PNG.
      runs: ``[(label, config, model, vae_params), ...]``; the inputs come from the first
        config's ``figure`` settings.
    """
    config0 = runs[0][1]
    x = _inputs(config0.figure.num_inputs, config0.figure.input_seed)
    images = np.asarray(x)
    rows: dict[str, list[np.ndarray]] = {"input": list(images)}
    titles = [""] * len(images)
    for label, config, model, params in runs:
        fn = jax.jit(lambda p, x, c=config, m=model: _maps_and_pairs(c, m, p, x))
        maps, pairs, l_ad = fn(params, x)
        maps, pairs, l_ad = np.asarray(maps), np.asarray(pairs), np.asarray(l_ad)
        for k in range(2):
            rows[f"{label} top-{k + 1}"] = [
                plots.overlay(images[n], maps[n, pairs[n, k]]) for n in range(len(images))
            ]
        short = _SHORT.get(label, label[:8])
        titles = [
            f"{t}\n{short}: z{pairs[n, 0]},z{pairs[n, 1]} L={l_ad[n]:.2f}".strip()
            for n, t in enumerate(titles)
        ]
    plots.save_image_rows(
        path,
        rows,
        col_titles=titles,
        title="Attention of the two top latent dims (Fig. 8); L = their L_AD overlap",
    )


def save_pairs_figure(
    seed_dir: pathlib.Path,
    config: ml_collections.ConfigDict,
    model: Any,
    vae_params: Any,
    seed: int,
    compare_workdir: str | pathlib.Path | None,
) -> None:
    """Write the Figure 8 attention pairs of this run, alone or beside another run's.

    Args:
      seed_dir: the folder written to.
      config: this run's config.
      model: the VAE.
      vae_params: its parameters.
      seed: the seed (the other run's same seed is drawn).
      compare_workdir: another finished run, or ``None``.

    Writes ``attention_pairs.png``, or with ``compare_workdir``
    ``attention_pairs_vs_<its folder name>.png``, so a comparison never replaces the plain
    figure or another comparison.
    """
    runs = [(config.method, config, model, vae_params)]
    name = "attention_pairs.png"
    if compare_workdir is not None:
        other = load_run(pathlib.Path(compare_workdir), seed)
        runs.append((other[2].method, other[2], other[0], other[1]))
        name = f"attention_pairs_vs_{pathlib.Path(compare_workdir).absolute().name}.png"
    save_attention_pairs(seed_dir / name, runs)


# ------------------------------------------------------------------ scores along training

CURVE_FILE = "curve.json"
CURVE_FIGURE = "curve.png"
HEADLINE = {  # results name -> (metric, key) of one seed's evaluation
    "factor_vae_score": ("factor_vae", "eval_accuracy"),
    "beta_vae_score": ("beta_vae", "eval_accuracy"),
    "mig": ("mig", "discrete_mig"),
    "attention_overlap": ("attention_overlap", "mean"),
}


def curve_steps(config: ml_collections.ConfigDict, every: int) -> list[int]:
    """The steps scored along training.

    The multiples of ``every`` up to ``train.num_steps``, and ``train.num_steps``. ``every``
    must be a multiple of ``config.train.keep_every``: only kept checkpoints can be scored
    after training moved on.

    Args:
      config: the experiment config.
      every: the scoring period (``--curve_every``).

    Returns:
      The steps, sorted.

    Raises:
      ConfigError (``curve_every``): ``every`` is not a positive multiple of ``keep_every``.
    """
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise validation.ConfigError("curve_every", f"must be a positive integer; got {every!r}")
    keep = int(config.train.keep_every or 0)
    if keep < 1 or every % keep:
        raise validation.ConfigError(
            "curve_every",
            f"must be a multiple of config.train.keep_every (the kept checkpoints); got {every} "
            f"with keep_every={keep}" + (" (set --config.train.keep_every)" if keep < 1 else ""),
        )
    n = int(config.train.num_steps)
    return sorted({*range(every, n + 1, every), n})


def headline(result: Mapping[str, Any]) -> dict[str, float]:
    """The headline numbers of one seed's evaluation (:data:`HEADLINE`).

    Args:
      result: one seed's evaluation (:func:`evaluate`).

    Returns:
      ``{name: value}`` of the metrics present.
    """
    return {name: result[m][k] for name, (m, k) in HEADLINE.items() if m in result}


def evaluate_step(
    config: ml_collections.ConfigDict,
    run_: workdir_lib.Run,
    eval_config: Mapping[str, Any],
    step: int,
    gt: DSpritesGroundTruth,
) -> dict[str, Any] | None:
    """The metrics of the run at an earlier kept ``step`` (no figures).

    Read from the step's evaluation folder when already there, else computed from the kept
    checkpoint and written there (``results.json``, not linked from the workdir).

    Args:
      config: the seed's config.
      run_: the seed's run.
      eval_config: the evaluation config (the folder's identity).
      step: a kept step.
      gt: the ground truth the metrics sample from.

    Returns:
      The seed's evaluation at ``step``, or ``None`` (logged) when the run has no checkpoint
      of that step.
    """
    evaluation = run_.evaluation(eval_config, step=step)
    seed = int(config.seed)
    if evaluation.results_path.exists():
        return json.loads(evaluation.results_path.read_text())["per_seed"][str(seed)]
    model, state, _, _ = build(config, seed)
    try:
        state = restore_params(run_.workdir, state, step=step)
    except FileNotFoundError as err:
        logging.warning("seed %d: step %d not scored: %s", seed, step, err)
        return None
    t = time.time()
    result = evaluate(config, model, vae_params_of(state), seed, gt)
    result["step"] = step
    result["total_eval_wall_s"] = time.time() - t
    evaluation.save_results(result, extra={"method": config.method}, publish=False)
    logging.info("seed %d step %d scored in %.0f s", seed, step, result["total_eval_wall_s"])
    return result


def curve_record(
    config: ml_collections.ConfigDict,
    steps: Sequence[int],
    per_step: Mapping[int, Mapping[str, Mapping[str, float]]],
    train_s_per_step: Mapping[str, float],
) -> dict[str, Any]:
    """The scores along training, as written to ``curve.json``.

    Args:
      config: the experiment config.
      steps: the steps scored.
      per_step: ``per_step[step][seed]``, each seed's headline numbers (:func:`headline`).
      train_s_per_step: training seconds per step of each seed.

    Returns:
      ``{"method", "variant", "num_steps", "steps", "curve", "train_s_per_step", "paper"}``;
      each ``curve`` row holds the step, the per-seed numbers and their mean / std (ddof=0) /
      values over seeds.
    """
    rows = []
    for step in steps:
        seeds = per_step.get(step, {})
        per_seed = {s: dict(v) for s, v in sorted(seeds.items(), key=lambda kv: int(kv[0]))}
        rows.append({"step": int(step), "per_seed": per_seed, "summary": _summary(per_seed)})
    return {
        "method": config.method,
        "variant": config.variant,
        "num_steps": int(config.train.num_steps),
        "steps": [int(s) for s in steps],
        "curve": rows,
        "train_s_per_step": dict(train_s_per_step),
        "paper": paper.for_experiment(NAME, method=config.method),
    }


CURVE_METRICS = {"factor_vae_score": "FactorVAE score", "beta_vae_score": "beta-VAE score",
                 "mig": "MIG"}  # fmt: skip


def save_curve_figure(path: pathlib.Path, curves: Mapping[str, Mapping[str, Any]]) -> None:
    """Score against step, one panel per metric, a line and band per method.

    The line is the mean over seeds, the band min to max over seeds; the paper's Table 3
    values and the independent reproduction's FactorVAE plateau are reference lines.

    Args:
      path: the PNG.
      curves: label -> curve record (:func:`curve_record`).
    """
    panels: dict[str, dict[str, tuple]] = {title: {} for title in CURVE_METRICS.values()}
    for label, record in curves.items():
        for name, title in CURVE_METRICS.items():
            pts = [
                (row["step"], [v[name] for v in row["per_seed"].values() if name in v])
                for row in record["curve"]
            ]
            pts = [(s, v) for s, v in pts if v]
            if pts:
                n = max(len(v) for _, v in pts)
                panels[title][f"{label} (n={n})"] = (
                    [s for s, _ in pts],
                    [float(np.mean(v)) for _, v in pts],
                    [min(v) for _, v in pts],
                    [max(v) for _, v in pts],
                )
    first = CURVE_METRICS["factor_vae_score"]
    # one reference line per method, in the colour of its first label (several labels of one
    # method, e.g. an ablation of its weights, would otherwise draw the same line again)
    first_label: dict[str, str] = {}
    for label, record in curves.items():
        first_label.setdefault(record["method"], label)
    lo, hi = paper.TABLE3_INDEPENDENT_CURVES["factorvae"]["plateau"]
    plots.save_curves(
        path,
        panels,
        hlines={
            first: [
                (score, f"paper {m} {score}", f"{label} (n=")  # that label's line only
                for m, label in first_label.items()
                if (score := paper.TABLE3_FACTOR_VAE_SCORE.get(m)) is not None
            ]
        },
        hspans={first: [(lo, hi, "FACT 2020 FactorVAE plateau")]},
        title="dSprites scores along training (mean over seeds; band: min to max)",
    )


def _train_s_per_step(workdir: pathlib.Path, seeds: Sequence[int]) -> dict[str, float]:
    out = {}
    for seed in seeds:
        path = workdir / f"seed_{seed}" / train.TRAIN_WALL_FILE
        try:
            wall = json.loads(path.read_text())
            out[str(seed)] = float(wall["seconds"]) / max(int(wall["step"]), 1)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # bookkeeping only: a missing or unreadable file leaves the seed out
    return out


# ------------------------------------------------------------------------------ summary


def summarize(per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean / std (ddof=0) / values over seeds of each seed's headline numbers.

    Args:
      per_seed: ``{seed: evaluation}``.

    Returns:
      ``{headline name: {"mean", "std", "values"}}``.
    """
    return _summary({seed: headline(result) for seed, result in per_seed.items()})


def _summary(per_seed: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    out = {}
    for name in HEADLINE:
        vals = [v[name] for v in per_seed.values() if name in v]
        if vals:
            out[name] = {
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals)),
                "values": [float(v) for v in vals],
            }
    return out


NAME = "dsprites_disentanglement"
DEFAULT_SEEDS = (0, 1, 2)


def inputs(
    config: ml_collections.ConfigDict,
    *,
    compare_workdir: str | pathlib.Path | None = None,
    compare_seeds: Sequence[int] = DEFAULT_SEEDS,
    skip_eval: bool = False,
    official_dsprites: str | None = None,
    ensemble: bool = False,
    curve_every: int = 0,
) -> template.Inputs:
    """The launcher's arguments, checked before any work.

    ``curve_every`` is checked against the kept checkpoints, ``compare_workdir`` must be a
    finished run of the same seeds, and ``official_dsprites`` is loaded (a bad path fails
    fast).

    Args:
      config: the experiment config.
      compare_workdir: see :func:`train_and_evaluate`.
      compare_seeds: the seeds that will run (each must be a finished seed of
        ``compare_workdir``).
      skip_eval: only train (the official images are then not loaded).
      official_dsprites: see :func:`train_and_evaluate`.
      ensemble: see :func:`train_and_evaluate`.
      curve_every: see :func:`train_and_evaluate`.

    Returns:
      The :class:`~vae_xai.experiments.template.Inputs` (data identity, values, evaluation
      identity).
    """
    if curve_every:
        curve_steps(config, curve_every)
    if compare_workdir is not None:
        check_compare_run(pathlib.Path(compare_workdir), compare_seeds)
    if official_dsprites and not skip_eval:
        gt = DSpritesGroundTruth.from_official(official_dsprites)
    else:
        gt = DSpritesGroundTruth()
    return template.Inputs(
        data={"dataset": "dSprites, rendered", **renderer_identity()},
        values={
            "gt": gt,
            "compare_workdir": compare_workdir,
            "skip_eval": skip_eval,
            "ensemble": ensemble,
            "curve_every": curve_every,
        },
        eval_identity={"eval_images": gt.source},
    )


def train_run(
    config: ml_collections.ConfigDict, run: workdir_lib.Run, inputs: template.Inputs
) -> template.Trained:
    """Train (or resume) one seed in the run's folder.

    Args:
      config: the seed's config.
      run: the seed's run.
      inputs: unused.

    Returns:
      The trained step, ``(model, state)`` and the training wall time.
    """
    model, state, wall = train_seed(config, run.workdir, int(config.seed))
    step = int(state.step)
    logging.info("seed %d: trained to step %d (%.0f s of training)", config.seed, step, wall)
    return template.Trained(step=step, model=(model, state), info={"train_wall_s": wall})


def train_seeds(
    configs: Mapping[int, ml_collections.ConfigDict],
    workdir: pathlib.Path,
    inputs: template.Inputs,
) -> None:
    """With ``--ensemble``, train every seed as one vmapped step first (:func:`train_ensemble`).

    Args:
      configs: ``{seed: config}``.
      workdir: the folder of one run per seed.
      inputs: the launcher's arguments (``ensemble``).
    """
    if inputs.values["ensemble"]:
        train_ensemble(next(iter(configs.values())), workdir, list(configs))


def evaluate_run(
    config: ml_collections.ConfigDict,
    run: workdir_lib.Run,
    trained: template.Trained,
    inputs: template.Inputs,
    evaluation: workdir_lib.Evaluation,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate one seed: the metrics, the attention overlap, the traversal and Figure 8.

    Read back when this evaluation exists (only the comparison figure is redrawn); with
    ``curve_every``, the metrics at each kept step (:func:`evaluate_step`) go under
    ``curve``.

    Args:
      config: the seed's config.
      run: the seed's run.
      trained: the trained step and ``(model, state)``.
      inputs: the launcher's arguments.
      evaluation: the evaluation folder.

    Returns:
      ``(result, extra)``: the seed's numbers and the top-level entries of its results.json
      (``method``, ``variant``, ``summary``).
    """
    model, state = trained.model
    seed = int(config.seed)
    v = inputs.values
    vae_params = vae_params_of(state)
    if evaluation.results_path.exists():  # this model, this evaluation config
        result = json.loads(evaluation.results_path.read_text())["per_seed"][str(seed)]
        if v["compare_workdir"] is not None:
            save_pairs_figure(evaluation.dir, config, model, vae_params, seed, v["compare_workdir"])
    else:
        t = time.time()
        result = evaluate(config, model, vae_params, seed, v["gt"])
        result["step"] = trained.step
        result["train_wall_s"] = trained.info["train_wall_s"]
        save_traversal(evaluation.dir / "traversal.png", config, model, vae_params)
        save_pairs_figure(evaluation.dir, config, model, vae_params, seed, None)
        if v["compare_workdir"] is not None:
            save_pairs_figure(evaluation.dir, config, model, vae_params, seed, v["compare_workdir"])
        result["total_eval_wall_s"] = time.time() - t
    if v["curve_every"]:
        curve = {}
        for step in curve_steps(config, v["curve_every"])[:-1]:
            earlier = evaluate_step(config, run, evaluation.config, step, v["gt"])
            if earlier is not None:
                curve[str(step)] = headline(earlier)
        curve[str(trained.step)] = headline(result)
        result["curve"] = curve
    extra = {
        "method": config.method,
        "variant": config.variant,
        "summary": summarize({str(seed): result}),
    }
    return result, extra


def aggregate(
    config: ml_collections.ConfigDict,
    docs: Mapping[int, Mapping[str, Any]],
    folder: pathlib.Path,
    inputs: template.Inputs,
) -> dict[str, Any]:
    """The aggregate's entries over seeds; with ``curve_every``, the curve files too.

    Args:
      config: the experiment config.
      docs: each seed's results document.
      folder: the aggregate's folder; gets ``curve.json`` (:func:`curve_record`) and
        ``curve.png`` when the seeds were scored along training.
      inputs: unused.

    Returns:
      ``method``, ``variant``, ``summary`` (mean / std over seeds of the headline numbers) and
      ``paper``.
    """
    per_seed = {str(s): results_lib.per_seed_entry(d) for s, d in docs.items()}
    extra = {
        "method": config.method,
        "variant": config.variant,
        "summary": summarize(per_seed),
        "paper": paper.for_experiment(NAME, method=config.method),
    }
    curves = {s: r["curve"] for s, r in per_seed.items() if "curve" in r}
    if curves:
        steps = sorted({int(k) for c in curves.values() for k in c})
        per_step = {
            step: {s: c[str(step)] for s, c in curves.items() if str(step) in c} for step in steps
        }
        workdir = pathlib.Path(next(iter(docs.values()))["run"]["workdir"]).parent
        record = curve_record(config, steps, per_step, _train_s_per_step(workdir, list(docs)))
        workdir_lib.write_json_atomic(folder / CURVE_FILE, record)
        save_curve_figure(folder / CURVE_FIGURE, {config.method: record})
    logging.info("results: %s", json.dumps(extra["summary"]))
    return extra


EXPERIMENT = template.Experiment(
    name=NAME,
    fields=FIELDS,
    validate=validate,
    inputs=inputs,
    train=train_run,
    evaluate=evaluate_run,
    paper=lambda config, inputs: paper.for_experiment(NAME, method=config.method),
    train_seeds=train_seeds,
    aggregate=aggregate,
    reuse_results=False,  # evaluate_run reads its results itself and adds curve steps
)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    seeds: Sequence[int] | None = None,
    compare_workdir: str | pathlib.Path | None = None,
    skip_eval: bool = False,
    official_dsprites: str | None = None,
    ensemble: bool = False,
    curve_every: int = 0,
) -> dict[str, Any]:
    """Train and evaluate every seed, one run per seed in ``workdir/seed_N``.

    Through :func:`vae_xai.experiments.template.run`.

    Args:
      config: the experiment config (``experiments/configs/dsprites_disentanglement.py``).
      workdir: the folder of one run per seed.
      seeds: default :data:`DEFAULT_SEEDS`.
      compare_workdir: another method's workdir (same seeds, finished): its attention pairs
        are drawn beside this run's (Figure 8, ``attention_pairs_vs_<name>.png``).
      skip_eval: only train.
      official_dsprites: the official ``dsprites_ndarray_...npz`` (or its folder): score the
        metrics on its images instead of the renderer's.
      ensemble: train the seeds as one vmapped step first (:func:`train_ensemble`; whether it
        pays depends on the device, measured in RESULTS.md, section "Seed ensembles and
        several steps per dispatch on CPU").
      curve_every: a multiple of ``config.train.keep_every`` (0: off): also score every seed
        at each kept step that is a multiple of it (:func:`curve_steps`), each in the
        evaluation folder of its step (reused, never scored twice), and write ``curve.json``
        (:func:`curve_record`) and ``curve.png`` with the aggregate (linked as
        ``workdir/curve.json``, ``workdir/curve.png``). Combine methods with
        ``python -m experiments.dsprites_curves``.

    Returns:
      The aggregate ``results.json`` written (the results schema: the seeds' numbers under
      ``per_seed``, the headline numbers' mean / std / values under ``summary``).

    Raises:
      ConfigError: no seed, or a bad config field or argument.
    """
    seeds = seeds_lib.parse_seeds(list(DEFAULT_SEEDS if seeds is None else seeds))
    if not seeds:
        raise validation.ConfigError("seeds", "name at least one seed")
    return template.run(
        EXPERIMENT,
        config,
        workdir,
        seeds=seeds,
        train_only=skip_eval,
        compare_seeds=seeds,
        compare_workdir=compare_workdir,
        skip_eval=skip_eval,
        official_dsprites=official_dsprites,
        ensemble=ensemble,
        curve_every=curve_every,
    )
