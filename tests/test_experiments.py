"""The launchers end to end on tiny settings: outputs written, second run resumes."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from tests.snapshots import snapshot
from vae_xai.validation import ConfigError
from vae_xai.workdir import WorkdirError

REPO = pathlib.Path(__file__).resolve().parents[1]


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.e2e
def test_quickstart_writes_figures_and_resumes(tmp_path):
    args = (
        f"--workdir={tmp_path}",
        f"--config={REPO}/experiments/configs/quickstart.py:smoke",
        "--config.train.num_steps=4",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=2",
    )
    first = run("experiments.quickstart", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["seeds"] == [0] and doc["config"]["variant"] == "smoke"
    results = doc["per_seed"]["0"]
    assert len(results["kl_per_latent"]) == 10
    assert (tmp_path / "latent_attention.png").stat().st_size > 1000
    assert (tmp_path / "reconstructions.png").exists()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    # a longer schedule on the same workdir continues from step 4 instead of restarting
    second = run(
        "experiments.quickstart",
        *args[:-3],
        "--config.train.num_steps=6",
        "--config.train.checkpoint_every=2",
        "--config.train.log_every=2",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    record = json.loads((tmp_path / "run.json").read_text())
    assert [s["num_steps"] for s in record["starts"]] == [4, 6]
    assert record["starts"][1]["continues_from_step"] == 4
    assert record["starts"][1]["changed"] == {"train.num_steps": [4, 6]}
    assert len(record["evaluations"]) == 2  # one per trained model, each in its own folder
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["per_seed"]["0"]["steps"] == 6
    # TensorBoard: one event file per training call in the workdir, one per evaluation
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 2
    evaluation = pathlib.Path(results["evaluation"]["dir"])
    assert len(list(evaluation.glob("events.out.tfevents.*"))) == 1

    # issue 10: another learning rate, a smaller num_steps, a zero period, an unknown layer
    # are refused in seconds with the field named, and nothing in the workdir changes
    # (the launcher once, the library it calls for the rest: the same check, no 6-s start-up)
    before = snapshot(tmp_path)
    base = (f"--workdir={tmp_path}", f"--config={REPO}/experiments/configs/quickstart.py:smoke")
    refused = run(
        "experiments.quickstart",
        *base,
        "--config.train.num_steps=6",
        "--config.train.learning_rate=0.001",
    )
    message = "train.learning_rate: 0.0005 -> 0.001"
    assert refused.returncode != 0 and message in refused.stderr, refused.stderr[-3000:]
    assert str(tmp_path) in refused.stderr
    assert snapshot(tmp_path) == before

    from experiments.configs.quickstart import get_config
    from vae_xai.experiments import quickstart

    def config(**fields):
        cfg = get_config("smoke")
        for key, value in fields.items():
            section, name = key.split("__")
            cfg[section][name] = value
        return cfg

    t0 = time.perf_counter()
    with pytest.raises(
        WorkdirError, match="trained to step 6; train.num_steps=5 is smaller"
    ) as err:
        quickstart.train_and_evaluate(config(train__num_steps=5), tmp_path)
    assert str(tmp_path) in str(err.value) and snapshot(tmp_path) == before
    fresh = tmp_path / "fresh"
    for fields, message in [
        (dict(train__checkpoint_every=0), "train.checkpoint_every: must be an integer >= 1; got 0"),
        (dict(eval__layer="conv9"), "eval.layer: ConvVAE.encode has no layer 'conv9'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            quickstart.train_and_evaluate(config(**fields), fresh)
        assert not fresh.exists()
    assert time.perf_counter() - t0 < 30  # refused before any training


def test_mnist_attention_bad_digits_fail_before_reading_data(tmp_path):
    out = run(
        "experiments.mnist_attention",
        f"--workdir={tmp_path / 'run'}",
        f"--data_dir={tmp_path}",
        "--config.train_digits=(11,)",
    )
    assert out.returncode != 0
    assert "train_digits: MNIST digits are integers 0..9; got [11]" in out.stderr, out.stderr[
        -2000:
    ]
    assert not (tmp_path / "run").exists()


def test_mnist_attention_requires_data_dir(tmp_path):
    out = run("experiments.mnist_attention", f"--workdir={tmp_path}")
    assert out.returncode != 0
    assert "--data_dir is required" in out.stderr


def test_mnist_attention_missing_files_fail_fast(tmp_path):
    out = run("experiments.mnist_attention", f"--workdir={tmp_path}", f"--data_dir={tmp_path}")
    assert out.returncode != 0
    assert "train-images-idx3-ubyte" in out.stderr


@pytest.mark.e2e
@pytest.mark.real_data
def test_mnist_attention_end_to_end(tmp_path, data_dir):
    out = run(
        "experiments.mnist_attention",
        f"--workdir={tmp_path}",
        f"--data_dir={data_dir / 'mnist'}",
        f"--config={REPO}/experiments/configs/mnist_attention.py:smoke",
        "--config.train.num_steps=3",
        "--config.train.checkpoint_every=3",
        "--config.eval.max_images=300",
        "--config.eval.batch_size=100",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    (digit,) = results["per_seed"]["0"]["digits"]
    assert digit["digit"] == 1 and digit["num_test_images"] == 300
    aurocs = digit["test_auroc_normal_vs_other_digits"]
    assert set(aurocs) == {
        "recon_error",
        "attention",
        "anomaly_attention_prior",
        "anomaly_attention_empirical",
    }
    assert all(0.0 <= v <= 1.0 for v in aurocs.values())
    assert (tmp_path / "figure_digit_1.png").stat().st_size > 1000  # a link into evaluations/
    assert (tmp_path / "digit_1" / "checkpoints").is_dir()


def _tiny_dsprites_config(method: str):
    from experiments.configs.dsprites_disentanglement import get_config

    c = get_config(f"{method},smoke")
    c.train.checkpoint_every = 1
    return c


@pytest.mark.e2e
@pytest.mark.slow
def test_dsprites_disentanglement_end_to_end_and_resume(tmp_path):
    from vae_xai.experiments import dsprites_disentanglement as dd

    fv = dd.train_and_evaluate(_tiny_dsprites_config("factorvae"), tmp_path / "fv", seeds=[0])
    out = dd.train_and_evaluate(
        _tiny_dsprites_config("ad_factorvae"), tmp_path / "ad", seeds=[0],
        compare_workdir=tmp_path / "fv",
    )  # fmt: skip
    assert fv["method"] == "factorvae" and out["method"] == "ad_factorvae"
    assert out["seeds"] == [0] and out["paper"]["factor_vae_score"] == 0.93
    seed = out["per_seed"]["0"]
    assert seed["step"] == 2 and seed["eval_images"] == "renderer"
    for metric, key in [("factor_vae", "eval_accuracy"), ("beta_vae", "eval_accuracy")]:
        assert 0.0 <= seed[metric][key] <= 1.0
    assert 0.0 <= seed["mig"]["discrete_mig"] <= 1.0
    assert 0.0 <= seed["attention_overlap"]["mean"] <= 1.0
    assert out["summary"]["factor_vae_score"]["values"] == [seed["factor_vae"]["eval_accuracy"]]
    assert (
        out["mean_std"]["factor_vae.eval_accuracy"]["mean"] == seed["factor_vae"]["eval_accuracy"]
    )
    own = json.loads((tmp_path / "ad" / "seed_0" / "results.json").read_text())
    assert own["per_seed"]["0"] == seed and own["config"]["seed"] == 0
    seed_dir = pathlib.Path(own["evaluation"]["dir"])  # the seed's own evaluation folder
    assert seed_dir.parent == tmp_path / "ad" / "seed_0" / "evaluations"
    for name in (
        "results.json",
        "traversal.png",
        "attention_pairs.png",
        "attention_pairs_vs_fv.png",
    ):
        assert (seed_dir / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "ad" / "results.json").read_text())
    assert on_disk == out
    assert on_disk["data"]["renderer"] == "data_pipelines.dsprites.render_from_classes"

    # a second call resumes: no training, and the evaluation at this step is reused
    log = (tmp_path / "ad" / "seed_0" / "metrics.jsonl").read_text()
    again = dd.train_and_evaluate(_tiny_dsprites_config("ad_factorvae"), tmp_path / "ad", seeds=[0])
    assert again["per_seed"]["0"] == seed
    assert (tmp_path / "ad" / "seed_0" / "metrics.jsonl").read_text() == log
    # ... and a comparison asked for later still draws its Figure 8 panel, beside the plain one
    pairs = seed_dir / "attention_pairs_vs_fv.png"
    pairs.unlink()
    fv_dir = tmp_path / "fv"
    dd.train_and_evaluate(
        _tiny_dsprites_config("ad_factorvae"), tmp_path / "ad", seeds=[0], compare_workdir=fv_dir
    )
    assert pairs.stat().st_size > 0 and (seed_dir / "attention_pairs.png").exists()

    # where the two top maps lie: recorded by the evaluation, recomputed from the checkpoint
    # with the run's own config and seed by the launcher, and from the maps with the top pair
    # picked per image in a plain loop
    import numpy as np

    from vae_xai.train import restore_params

    overlap = seed["attention_overlap"]
    assert 0.0 <= overlap["blank_fraction"] <= 1.0 and 0.0 < overlap["sprite_area"] < 1.0
    stats = tmp_path / "stats" / "a.json"
    proc = run(
        "experiments.dsprites_attention_stats",
        f"--run_dirs={tmp_path / 'ad' / 'seed_0'}", "--steps=2", f"--out={stats}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(stats.read_text())
    assert row["method"] == "ad_factorvae" and row["seed"] == 0 and row["step"] == 2
    assert row["attention_overlap"] == overlap
    again = run(
        "experiments.dsprites_attention_stats",
        f"--run_dirs={tmp_path / 'ad' / 'seed_0'}", "--steps=2", f"--out={stats}",
    )  # fmt: skip
    assert again.returncode != 0 and "exists" in again.stderr
    with pytest.raises(ValueError, match="seed_N"):
        dd.checkpoint_attention_stats(tmp_path / "ad", 2)
    config = _tiny_dsprites_config("ad_factorvae")
    model, state, _, _ = dd.build(config, 0)
    params = dd.vae_params_of(restore_params(tmp_path / "ad" / "seed_0", state, step=2))
    x = dd._inputs(config.eval.overlap_batch, 20_000)
    maps, top, _ = (np.asarray(a) for a in dd._maps_and_pairs(config, model, params, x))
    picked = np.stack([[maps[i, top[i, r]] for r in range(2)] for i in range(len(top))])
    for key, value in dd.attention_mass_stats(picked, np.asarray(x)[..., 0] > 0.5).items():
        assert overlap[key] == (None if value is None else pytest.approx(value, rel=1e-4)), key

    # issue 10: another method or another latent size on this workdir is refused in seconds,
    # before training, and changes nothing (the old launcher rewrote config.json first and
    # left a config for a model that was never trained)
    before = snapshot(tmp_path / "ad")
    for change, match in [
        (dict(method="factorvae"), 'method: "ad_factorvae" -> "factorvae"'),
        (dict(latent_dim=5), "model.latent_dim: 10 -> 5"),
    ]:
        cfg = _tiny_dsprites_config(change.get("method", "ad_factorvae"))
        cfg.model.latent_dim = change.get("latent_dim", cfg.model.latent_dim)
        t0 = time.perf_counter()
        with pytest.raises(WorkdirError, match=match) as err:
            dd.train_and_evaluate(cfg, tmp_path / "ad", seeds=[0])
        assert time.perf_counter() - t0 < 15
        assert str(tmp_path / "ad") in str(err.value)
        assert snapshot(tmp_path / "ad") == before
    # a comparison run must be a finished run of this experiment, checked before training
    with pytest.raises(FileNotFoundError, match="compare_workdir: .*run.json not found"):
        dd.train_and_evaluate(
            _tiny_dsprites_config("factorvae"), tmp_path / "y", seeds=[0], compare_workdir=tmp_path
        )
    with pytest.raises(FileNotFoundError, match="seed_1/run.json not found"):
        dd.train_and_evaluate(
            _tiny_dsprites_config("factorvae"), tmp_path / "y", seeds=[1], compare_workdir=fv_dir
        )
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        dd.train_and_evaluate(
            _tiny_dsprites_config("factorvae"), tmp_path / "x", seeds=[0],
            official_dsprites=str(tmp_path / "nope.npz"),
        )  # fmt: skip
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("train.checkpoint_every", 0, "train.checkpoint_every: must be an integer >= 1; got 0"),
        ("train.log_every", 0, "train.log_every: must be an integer >= 1; got 0"),
        ("train.num_steps", -5, "train.num_steps: must be an integer >= 1; got -5"),
        ("ad.layer", "conv9", "ad.layer: .*has no layer 'conv9'"),
        ("model.latent_dim", 1, "model.latent_dim: must be an integer >= 2; got 1"),
    ],
)
def test_dsprites_bad_config_fails_before_any_work(tmp_path, field, value, match):
    from vae_xai.experiments import dsprites_disentanglement as dd

    cfg = _tiny_dsprites_config("ad_factorvae")
    *parents, key = field.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[key] = value
    with pytest.raises(ConfigError, match=match):
        dd.train_and_evaluate(cfg, tmp_path / "run", seeds=[0])
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
def test_quickstart_seeds_one_run_each_and_the_aggregate(tmp_path):
    """``--seeds=0,1``: each seed one run in workdir/seed_N with its own figure, and
    workdir/results.json holding both seeds' numbers and their mean / std (numpy by hand)."""
    import numpy as np

    from experiments.configs.quickstart import get_config
    from vae_xai.experiments import quickstart

    out = run(
        "experiments.quickstart", f"--workdir={tmp_path}", "--seeds=0,1",
        f"--config={REPO}/experiments/configs/quickstart.py:smoke", "--config.train.num_steps=2",
        "--config.train.checkpoint_every=2", "--config.train.log_every=2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["seeds"] == [0, 1] and doc["experiment"] == "quickstart"
    elbo = []
    for seed in (0, 1):
        own = json.loads((tmp_path / f"seed_{seed}" / "results.json").read_text())
        assert own["config"]["seed"] == seed and own["per_seed"] == {
            str(seed): doc["per_seed"][str(seed)]
        }
        assert (tmp_path / f"seed_{seed}" / "latent_attention.png").stat().st_size > 1000
        elbo.append(own["per_seed"][str(seed)]["held_out_negative_elbo"])
    assert elbo[0] != elbo[1]  # two different runs
    stats = doc["mean_std"]["held_out_negative_elbo"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(elbo), rel=1e-12)
    assert stats["std"] == pytest.approx(np.std(elbo), rel=1e-12)
    # the parent is no single run, and a bad --seeds is a usage error before any work
    cfg = get_config("smoke")
    cfg.train.num_steps = 2
    with pytest.raises(WorkdirError, match="holds one run per seed"):
        quickstart.train_and_evaluate(cfg, tmp_path)
    bad = run("experiments.quickstart", f"--workdir={tmp_path / 'b'}", "--seeds=0,x")
    assert bad.returncode != 0 and "--seeds: seeds: must be integers" in bad.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_ucsd_seeds_aggregate(tmp_path):
    from experiments.configs.ucsd_localization import get_config
    from tests.fixtures_anomaly import make_ucsd_ped1
    from vae_xai.experiments import ucsd_localization

    make_ucsd_ped1(tmp_path / "data")
    cfg = get_config("smoke")
    cfg.eval.update(layers=("conv2",), references=("prior",), criteria=("difference",))
    doc = ucsd_localization.train_and_evaluate(
        cfg, tmp_path / "w", data_dir=tmp_path / "data", seeds=[0, 1], progress=False
    )
    key = "metrics.recon.overall.pixel_auroc"
    values = [doc["per_seed"][s]["metrics"]["recon"]["overall"]["pixel_auroc"] for s in "01"]
    assert doc["mean_std"][key]["values"] == values
    assert doc["mean_std"][key]["mean"] == pytest.approx(sum(values) / 2, rel=1e-12)
    assert doc["paper"]["pixel_auroc"]["recon"] == 0.86
    for s in (0, 1):
        record = json.loads((tmp_path / "w" / f"seed_{s}" / "run.json").read_text())
        assert record["config"]["seed"] == s and record["config"]["variant"] == "smoke"
