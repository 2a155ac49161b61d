"""Paper Table 3 and Figure 8: beta-VAE, FactorVAE and AD-FactorVAE on dSprites.

The library side of ``python -m experiments.dsprites_disentanglement`` (usage there).

Each seed trains in ``workdir/seed_N`` (resuming from its checkpoints), on batches rendered on
device from uniformly random factors (``batch_fn(step)`` seeded by the step). Then the encoder
mean is scored with the FactorVAE metric, the beta-VAE score and MIG
(:mod:`vae_xai.metrics.disentanglement`) on images rendered from factor values, and the
evaluation's folder ``workdir/evaluations/step<N>_<hash>/`` gets per seed ``seed_N/eval.json``,
``traversal.png`` (latent traversals) and ``attention_pairs.png`` (Figure 8: attention maps of
the two top latent dims for a few inputs; ``attention_pairs_vs_<other>.png`` with
``--compare_workdir``), and ``results.json`` with per-seed results and mean/std over seeds
next to the paper's numbers (linked as ``workdir/results.json``). The workdir is one run
(:mod:`vae_xai.workdir`): another method or model on it is refused before any work.
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
from vae_xai import seeds as seeds_lib
from vae_xai import workdir as workdir_lib
from vae_xai.experiments import paper
from vae_xai.experiments.dsprites_renderer import renderer_identity
from vae_xai.metrics import disentanglement as metrics_lib
from vae_xai.models.conv_vae import dsprites_vae
from vae_xai.models.factor_vae import FactorDiscriminator, init_factor_vae
from vae_xai.train import TrainState, create_state, restore_params, vae_update_fn
from vae_xai.workdir import Fields

METHODS = ("beta_vae", "factorvae", "ad_factorvae")

# What may change between starts of one workdir (vae_xai.workdir): num_steps may grow; the
# metric and figure settings and the checkpoint/log periods may differ; anything else is
# another run. (The seeds are not config fields: each trains in its own workdir/seed_N.)
FIELDS = Fields(
    num_steps="num_steps",
    eval=("eval", "figure"),
    schedule=("checkpoint_every", "keep_every", "log_every"),
)


def validate(config: ml_collections.ConfigDict) -> None:
    """Every field that could fail later, checked before any work (names the field)."""
    validation.one_of(config, "method", METHODS)
    validation.at_least(config, "latent_dim", 2)  # L_AD and the figure need two latent dims
    for field in ("num_steps", "batch_size", "checkpoint_every", "log_every"):
        validation.at_least(config, field, 1)
    validation.at_least(config, "keep_every", 0)
    if config.keep_every % config.checkpoint_every:
        raise validation.ConfigError(
            "keep_every",
            f"must be a multiple of checkpoint_every={config.checkpoint_every} (a kept step "
            f"must be a saved step); got {config.keep_every}",
        )
    validation.positive(config, "optim.vae_lr", "optim.disc_lr")
    validation.one_of(config, "disc_batch", ("independent", "same"))
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
    model = dsprites_vae(config.latent_dim)
    validation.model_layers(model, (64, 64, 1), [config.ad.layer], "ad.layer")
    if config.ad.dense_after:
        validation.model_layers(
            model, (64, 64, 1), [config.ad.dense_after], "ad.dense_after", feature_map=False
        )
    validation.subset(config, "eval.metrics", ("factor_vae", "beta_vae", "mig"), allow_empty=True)
    validation.at_least(config, "eval.overlap_batch", 1)
    validation.at_least(config, "figure.num_inputs", 1)
    validation.at_least(config, "figure.traversal_steps", 2)


DATA_SEED_OFFSET = 1_000_003  # data stream != the per-step key stream of jit_step


# ------------------------------------------------------------------------- building blocks


def build(config: ml_collections.ConfigDict, seed: int):
    """Model, initial state and update function of ``config.method`` for one seed.

    Returns ``(model, state, update_fn, batch_keys)``; ``state.params`` is the VAE's params
    for beta-VAE and ``{"vae": ..., "disc": ...}`` otherwise.
    """
    if config.method not in METHODS:
        raise ValueError(f"config.method must be one of {METHODS}; got {config.method!r}")
    model = dsprites_vae(config.latent_dim)
    key = jax.random.key(seed)
    o = config.optim
    if config.method == "beta_vae":
        params = jax.jit(model.init)(key, jnp.zeros((1, 64, 64, 1)))["params"]
        optimizer = optax.adam(o.vae_lr, b1=o.vae_b1, b2=o.vae_b2)
        update = vae_update_fn(model, optimizer, beta=config.beta)
        return model, create_state(params, optimizer), update, ("image",)

    if config.method == "factorvae" and config.ad.weight > 0:
        raise ValueError(
            "method 'factorvae' with ad.weight > 0 is AD-FactorVAE: use the ad_factorvae config"
        )
    if config.method == "ad_factorvae" and config.ad.weight <= 0:
        raise ValueError("method 'ad_factorvae' needs ad.weight > 0 (lambda of Eq. 7)")
    if config.disc_batch not in ("independent", "same"):
        raise ValueError(f'disc_batch must be "independent" or "same"; got {config.disc_batch!r}')
    disc = FactorDiscriminator(
        hidden=config.disc.hidden,
        num_layers=config.disc.num_layers,
        negative_slope=config.disc.negative_slope,
    )
    params = jax.jit(
        lambda k: init_factor_vae(
            k, model, disc, input_shape=(64, 64, 1), latent_dim=config.latent_dim
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
    independent = config.disc_batch == "independent"
    update = dis.factor_vae_update_fn(
        model,
        disc,
        optimizer,
        gamma=config.gamma,
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
    """The VAE's parameters from a beta-VAE or (AD-)FactorVAE state."""
    params = state.params
    return params["vae"] if isinstance(params, dict) and "disc" in params else params


def train_seed(
    config: ml_collections.ConfigDict, workdir: pathlib.Path, seed: int
) -> tuple[Any, TrainState, float]:
    """Train (or resume) one seed; returns ``(model, state, total training wall seconds)``.

    :func:`vae_xai.train.train` accumulates the wall time (compilation included) over
    resumed calls in ``workdir/train_wall.json``.
    """
    model, state, update, keys = build(config, seed)
    batch_fn = make_batch_fn(DATA_SEED_OFFSET + seed, config.batch_size, keys=keys)
    state, info = train.train(
        state,
        update,
        batch_fn,
        workdir=workdir,
        num_steps=config.num_steps,
        seed=seed,
        checkpoint_every=config.checkpoint_every,
        keep_every=config.get("keep_every") or None,
        log_every=config.log_every,
    )
    return model, state, info["total_wall_s"]


ENSEMBLE_DIR = "ensemble"


def train_ensemble(config: ml_collections.ConfigDict, workdir: pathlib.Path, seeds: Sequence[int]):
    """Train (or resume) all ``seeds`` as one vmapped step (:mod:`vae_xai.ensemble`) in
    ``workdir/ensemble``; each member is exported as the ordinary checkpoint of
    ``workdir/seed_N``, so :func:`train_seed` then finds it trained. Member ``i`` equals
    the separate run of its seed to float tolerance (``tests/test_ensemble.py``)."""
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
    batch_fns = [
        make_batch_fn(DATA_SEED_OFFSET + seed, config.batch_size, keys=keys) for seed in seeds
    ]
    t0 = time.time()
    ensemble_lib.fit_ensemble(
        states,
        update,
        batch_fns,
        seeds=list(seeds),
        workdir=ens_dir,
        member_workdirs=[workdir / f"seed_{s}" for s in seeds],
        num_steps=config.num_steps,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
    )
    logging.info("ensemble of seeds %s trained in %.0f s", list(seeds), time.time() - t0)


def check_compare_run(workdir: pathlib.Path, seeds: Sequence[int]) -> ml_collections.ConfigDict:
    """The recorded config of another finished run, checked before any work: it must be a
    ``dsprites_disentanglement`` run (``run.json``) whose every seed in ``seeds`` is trained
    to its ``num_steps``."""
    path = workdir / workdir_lib.RUN_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"--compare_workdir: {path} not found: is {workdir} a dsprites_disentanglement run?"
        )
    record = json.loads(path.read_text())
    if record.get("experiment") != "dsprites_disentanglement":
        raise ValueError(
            f"--compare_workdir: {workdir} holds a {record.get('experiment')!r} run, not a "
            "dsprites_disentanglement run"
        )
    config = ml_collections.ConfigDict(record.get("last_config", record["config"]))
    for seed in seeds:
        step = workdir_lib.trained_step(workdir / f"seed_{seed}")
        if step != config.num_steps:
            raise ValueError(
                f"--compare_workdir: seed {seed} of {workdir} is trained to step {step}, not "
                f"to its num_steps={config.num_steps}; finish it first"
            )
    return config


def load_run(workdir: pathlib.Path, seed: int) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """``(model, vae_params, config)`` of a finished seed of another run (its ``run.json``)."""
    config = check_compare_run(workdir, [seed])
    model, state, _, _ = build(config, seed)
    state = restore_params(workdir / f"seed_{seed}", state)
    return model, vae_params_of(state), config


# ------------------------------------------------------------------------------ evaluation


def evaluate(
    config: ml_collections.ConfigDict,
    model: Any,
    vae_params: Any,
    seed: int,
    gt: DSpritesGroundTruth | None = None,
) -> dict[str, Any]:
    """The three metrics on the encoder mean, plus the mean top-2 attention overlap.

    ``gt`` defaults to the renderer; pass ``DSpritesGroundTruth.from_official(path)`` to
    score on the official images.
    """
    gt = DSpritesGroundTruth() if gt is None else gt
    rep = dis.representation_fn(model, vae_params)
    rng = np.random.default_rng(config.eval.seed_offset + seed)
    out: dict[str, Any] = {}
    timings: dict[str, float] = {}
    known = {"factor_vae", "beta_vae", "mig"}
    for name in config.eval.metrics:
        if name not in known:
            raise ValueError(f"unknown metric {name!r}; choose from {sorted(known)}")
        t = time.time()
        kwargs = dict(config.eval[name])
        if name == "factor_vae":
            out[name] = metrics_lib.factor_vae_score(gt, rep, rng, **kwargs)
        elif name == "beta_vae":
            out[name] = metrics_lib.beta_vae_score(gt, rep, rng, **kwargs)
        else:
            out[name] = metrics_lib.mig(gt, rep, rng, **kwargs)
        timings[name] = time.time() - t
        logging.info("seed %d %s: %s (%.0f s)", seed, name, _short(out[name]), timings[name])
    out["attention_overlap"] = attention_overlap(config, model, vae_params, seed)
    out["eval_wall_s"] = timings
    out["eval_images"] = gt.source
    return out


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


def attention_overlap(config, model, vae_params, seed: int) -> dict[str, float]:
    """Mean / std over images of L_AD between the two top latent dims (lower = separated)."""
    x = _inputs(config.eval.overlap_batch, 20_000 + seed)
    _, _, l_ad = jax.jit(lambda p, x: _maps_and_pairs(config, model, p, x))(vae_params, x)
    l_ad = np.asarray(l_ad)
    return {"mean": float(l_ad.mean()), "std": float(l_ad.std()), "num_images": int(l_ad.size)}


def save_traversal(path: pathlib.Path, config, model, vae_params) -> None:
    """Latent traversals of one input: a row per dim (sorted by KL), values in +-limit."""
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

    ``runs`` = ``[(label, config, model, vae_params), ...]``; inputs from the first config.
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
    """``seed_dir/attention_pairs.png`` (this run), or with ``compare_workdir``'s same seed
    beside it, ``seed_dir/attention_pairs_vs_<its folder name>.png`` (so a comparison never
    replaces the plain figure or another comparison)."""
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
HEADLINE = {  # results name -> (metric, key) of one seed's eval.json
    "factor_vae_score": ("factor_vae", "eval_accuracy"),
    "beta_vae_score": ("beta_vae", "eval_accuracy"),
    "mig": ("mig", "discrete_mig"),
    "attention_overlap": ("attention_overlap", "mean"),
}


def curve_steps(config: ml_collections.ConfigDict, every: int) -> list[int]:
    """The steps scored along training: the multiples of ``every`` up to ``num_steps``, and
    ``num_steps``. ``every`` must be a multiple of ``config.keep_every`` (only kept
    checkpoints can be scored after training moved on)."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise validation.ConfigError("curve_every", f"must be a positive integer; got {every!r}")
    keep = int(config.get("keep_every") or 0)
    if keep < 1 or every % keep:
        raise validation.ConfigError(
            "curve_every",
            f"must be a multiple of config.keep_every (the kept checkpoints); got {every} with "
            f"keep_every={keep}" + (" (set --config.keep_every)" if keep < 1 else ""),
        )
    return sorted({*range(every, config.num_steps + 1, every), int(config.num_steps)})


def evaluate_step(
    config: ml_collections.ConfigDict,
    run_: workdir_lib.Run,
    eval_config: dict[str, Any],
    seed: int,
    step: int,
    gt: DSpritesGroundTruth,
) -> dict[str, Any] | None:
    """The metrics of ``seed`` at an earlier kept ``step`` (no figures): read from the step's
    evaluation folder when already there, else computed from the kept checkpoint and
    written (``evaluations/step<N>_<hash>/seed_<seed>/eval.json``). ``None`` (logged) when
    the seed has no checkpoint of that step."""
    evaluation = run_.evaluation(eval_config, step=step)
    eval_path = evaluation.dir / f"seed_{seed}" / "eval.json"
    if eval_path.exists():
        return json.loads(eval_path.read_text())
    seed_dir = run_.workdir / f"seed_{seed}"
    model, state, _, _ = build(config, seed)
    try:
        state = restore_params(seed_dir, state, step=step)
    except FileNotFoundError as err:
        logging.warning("seed %d: step %d not scored: %s", seed, step, err)
        return None
    t = time.time()
    result = evaluate(config, model, vae_params_of(state), seed, gt)
    result["step"] = step
    result["total_eval_wall_s"] = time.time() - t
    eval_path.parent.mkdir(parents=True, exist_ok=True)
    workdir_lib.write_json_atomic(eval_path, result)
    logging.info("seed %d step %d scored in %.0f s", seed, step, result["total_eval_wall_s"])
    return result


def curve_record(
    config: ml_collections.ConfigDict,
    steps: Sequence[int],
    per_step: dict[int, dict[str, dict[str, Any]]],
    train_s_per_step: dict[str, float],
) -> dict[str, Any]:
    """The scores along training: per step, each seed's headline numbers and their mean /
    std (ddof=0) / n over seeds; plus the training seconds per step of each seed."""
    rows = []
    for step in steps:
        seeds = per_step.get(step, {})
        entry: dict[str, Any] = {"step": int(step), "per_seed": {}, "summary": summarize(seeds)}
        for seed, result in sorted(seeds.items(), key=lambda kv: int(kv[0])):
            entry["per_seed"][seed] = {
                name: result[m][k] for name, (m, k) in HEADLINE.items() if m in result
            }
        rows.append(entry)
    return {
        "method": config.method,
        "variant": config.variant,
        "num_steps": int(config.num_steps),
        "steps": [int(s) for s in steps],
        "curve": rows,
        "train_s_per_step": train_s_per_step,
        "paper": paper.for_experiment(EXPERIMENT, method=config.method),
    }


CURVE_METRICS = {"factor_vae_score": "FactorVAE score", "beta_vae_score": "beta-VAE score",
                 "mig": "MIG"}  # fmt: skip


def save_curve_figure(path: pathlib.Path, curves: Mapping[str, Mapping[str, Any]]) -> None:
    """Score against step, one panel per metric, a line (mean over seeds) and band (min to
    max over seeds) per method, with the paper's Table 3 values and the independent
    reproduction's FactorVAE plateau as reference lines. ``curves``: label -> curve record
    (:func:`curve_record`)."""
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
    methods = [r["method"] for r in curves.values()]
    lo, hi = paper.TABLE3_INDEPENDENT_CURVES["factorvae"]["plateau"]
    plots.save_curves(
        path,
        panels,
        hlines={
            first: [
                (score, f"paper {m} {score}", label)
                for label, m in zip(curves, methods, strict=True)
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


def summarize(per_seed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Mean / std (ddof=0) / values over seeds of the headline numbers."""
    out = {}
    for name, (metric, key) in HEADLINE.items():
        vals = [r[metric][key] for r in per_seed.values() if metric in r]
        if vals:
            out[name] = {
                "mean": float(np.mean(vals)),
                "std": float(np.std(vals)),
                "values": [float(v) for v in vals],
            }
    return out


EXPERIMENT = "dsprites_disentanglement"
DEFAULT_SEEDS = (0, 1, 2)


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
    """Train and evaluate every seed; writes and returns this evaluation's ``results.json``
    (the results schema, :mod:`vae_xai.results`: the seeds' numbers under ``per_seed``, the
    headline numbers' mean / std / values under ``summary``).

    ``seeds`` defaults to :data:`DEFAULT_SEEDS`. Unlike the other experiments (each seed a
    run of its own, :mod:`vae_xai.seeds`), dSprites' seeds have always shared one run record
    (``workdir/run.json``; the config has no ``seed`` field), each seed training in
    ``workdir/seed_N``: the layout is kept so existing workdirs continue.

    Before any work: the config is validated, ``compare_workdir`` (if given) must be a
    finished run, ``official_dsprites`` is loaded (a bad path fails fast), and the workdir's
    run record is checked (:func:`vae_xai.workdir.start`: another method, latent size, ...
    is refused). ``ensemble``: the seeds train as one vmapped step first
    (:func:`train_ensemble`; pays on accelerators, not on a 2-core CPU). The evaluation of a
    seed lives in
    ``workdir/evaluations/step<N>_<hash>/seed_<seed>/`` and is reused when it exists.

    ``curve_every`` (a multiple of ``config.keep_every``; 0: off): also score every seed at
    each kept step that is a multiple of it (:func:`curve_steps`), each in the evaluation
    folder of its step (reused, never scored twice), and write ``curve.json`` (the
    :func:`curve_record`) and ``curve.png`` into the final evaluation's folder (linked as
    ``workdir/curve.json``, ``workdir/curve.png``). Combine methods with
    ``python -m experiments.dsprites_curves``.
    """
    validate(config)
    steps = curve_steps(config, curve_every) if curve_every else [int(config.num_steps)]
    seeds = seeds_lib.parse_seeds(list(DEFAULT_SEEDS if seeds is None else seeds))
    if not seeds:
        raise validation.ConfigError("seeds", "name at least one seed")
    if compare_workdir is not None:
        check_compare_run(pathlib.Path(compare_workdir), seeds)
    if official_dsprites and not skip_eval:
        gt = DSpritesGroundTruth.from_official(official_dsprites)
    else:
        gt = DSpritesGroundTruth()
    run_ = workdir_lib.start(
        workdir,
        config,
        experiment=EXPERIMENT,
        fields=FIELDS,
        data={"dataset": "dSprites, rendered", **renderer_identity()},
    )
    workdir = run_.workdir
    evaluation = None
    per_seed: dict[str, dict[str, Any]] = {}
    if not skip_eval:
        eval_config = {**run_.eval_config(config), "eval_images": gt.source}
        evaluation = run_.evaluation(eval_config, step=config.num_steps)
        if evaluation.results_path.exists():
            # (a results.json written before the results schema has no per_seed: the seeds'
            # eval.json are reused below)
            per_seed = json.loads(evaluation.results_path.read_text()).get("per_seed", {})

    out: dict[str, Any] = {}
    per_step: dict[int, dict[str, dict[str, Any]]] = {}
    if ensemble:
        train_ensemble(config, workdir, seeds)
    for seed in seeds:
        model, state, wall = train_seed(config, workdir / f"seed_{seed}", seed)
        step = int(state.step)
        logging.info("seed %d: trained to step %d (%.0f s of training in total)", seed, step, wall)
        if evaluation is None:
            continue
        seed_dir = evaluation.dir / f"seed_{seed}"
        seed_dir.mkdir(parents=True, exist_ok=True)
        eval_path = seed_dir / "eval.json"
        vae_params = vae_params_of(state)
        if eval_path.exists():
            result = json.loads(eval_path.read_text())  # this model, this evaluation config
            if compare_workdir is not None:
                save_pairs_figure(seed_dir, config, model, vae_params, seed, compare_workdir)
        else:
            t = time.time()
            result = evaluate(config, model, vae_params, seed, gt)
            result["step"] = step
            result["train_wall_s"] = wall
            save_traversal(seed_dir / "traversal.png", config, model, vae_params)
            save_pairs_figure(seed_dir, config, model, vae_params, seed, None)
            if compare_workdir is not None:
                save_pairs_figure(seed_dir, config, model, vae_params, seed, compare_workdir)
            result["total_eval_wall_s"] = time.time() - t
            workdir_lib.write_json_atomic(eval_path, result)
        per_seed[str(seed)] = result
        extra = {
            "method": config.method,
            "variant": config.variant,
            "summary": summarize(per_seed),
            "paper": paper.for_experiment(EXPERIMENT, method=config.method),
        }
        out = evaluation.save_results(per_seed=per_seed, extra=extra)
        logging.info("results so far: %s", json.dumps(extra["summary"]))
        if curve_every:
            per_step[step] = per_seed
            for s in steps[:-1]:
                result = evaluate_step(config, run_, eval_config, seed, s, gt)
                if result is not None:
                    per_step.setdefault(s, {})[str(seed)] = result
            record = curve_record(config, steps, per_step, _train_s_per_step(workdir, seeds))
            save_curve(run_, evaluation, eval_config, record, per_step, steps[:-1])
    return out


def save_curve(
    run_: workdir_lib.Run,
    evaluation: workdir_lib.Evaluation,
    eval_config: dict[str, Any],
    record: dict[str, Any],
    per_step: dict[int, dict[str, dict[str, Any]]],
    earlier: Sequence[int],
) -> None:
    """Write each earlier step's ``results.json`` (not linked from the workdir), and the
    curve's JSON and figure into the final evaluation (then relinked)."""
    for s in earlier:
        if per_step.get(s):
            run_.evaluation(eval_config, step=s).save_results(
                per_seed=per_step[s],
                extra={"method": record["method"], "summary": summarize(per_step[s])},
                publish=False,
            )
    workdir_lib.write_json_atomic(evaluation.dir / CURVE_FILE, record)
    save_curve_figure(evaluation.dir / CURVE_FIGURE, {record["method"]: record})
    evaluation.publish()
