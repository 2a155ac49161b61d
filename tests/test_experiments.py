"""The launchers end to end on tiny settings: outputs written, second run resumes."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

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


def test_quickstart_writes_figures_and_resumes(tmp_path):
    args = (
        f"--workdir={tmp_path}",
        f"--config={REPO}/experiments/configs/quickstart.py:small",
        "--config.num_steps=4",
        "--config.checkpoint_every=2",
        "--config.log_every=2",
    )
    first = run("experiments.quickstart", *args)
    assert first.returncode == 0, first.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["kl_per_latent"]) == 10
    assert (tmp_path / "latent_attention.png").stat().st_size > 1000
    assert (tmp_path / "reconstructions.png").exists()
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    # a longer schedule on the same workdir continues from step 4 instead of restarting
    second = run(
        "experiments.quickstart",
        *args[:-3],
        "--config.num_steps=6",
        "--config.checkpoint_every=2",
        "--config.log_every=2",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]


def test_mnist_attention_requires_data_dir(tmp_path):
    out = run("experiments.mnist_attention", f"--workdir={tmp_path}")
    assert out.returncode != 0
    assert "--data_dir is required" in out.stderr


def test_mnist_attention_missing_files_fail_fast(tmp_path):
    out = run("experiments.mnist_attention", f"--workdir={tmp_path}", f"--data_dir={tmp_path}")
    assert out.returncode != 0
    assert "train-images-idx3-ubyte" in out.stderr


@pytest.mark.real_data
def test_mnist_attention_end_to_end(tmp_path, data_dir):
    out = run(
        "experiments.mnist_attention",
        f"--workdir={tmp_path}",
        f"--data_dir={data_dir / 'mnist'}",
        f"--config={REPO}/experiments/configs/mnist_attention.py:small",
        "--config.num_steps=3",
        "--config.checkpoint_every=3",
        "--config.max_eval_images=300",
        "--config.eval_batch_size=100",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    (digit,) = results["digits"]
    assert digit["digit"] == 1 and digit["num_test_images"] == 300
    aurocs = digit["test_auroc_normal_vs_other_digits"]
    assert set(aurocs) == {
        "recon_error",
        "attention",
        "anomaly_attention_prior",
        "anomaly_attention_empirical",
    }
    assert all(0.0 <= v <= 1.0 for v in aurocs.values())
    assert (tmp_path / "digit_1" / "figure.png").stat().st_size > 1000


def _tiny_dsprites_config(method: str):
    from experiments.configs.dsprites_disentanglement import get_config

    c = get_config(f"{method},small")
    c.num_steps, c.batch_size, c.checkpoint_every, c.log_every = 2, 8, 1, 1
    c.disc.hidden, c.disc.num_layers = 16, 2
    c.eval.factor_vae = dict(batch_size=8, num_train=20, num_eval=10, num_variance_estimate=64)
    c.eval.beta_vae = dict(batch_size=8, num_train=20, num_eval=10)
    c.eval.mig = dict(num_train=64, batch_size=32)
    c.eval.overlap_batch = 8
    c.figure.num_inputs = 2
    c.figure.traversal_steps = 3
    return c


@pytest.mark.slow
def test_dsprites_disentanglement_end_to_end_and_resume(tmp_path):
    from experiments import dsprites_disentanglement as dd

    fv = dd.run(_tiny_dsprites_config("factorvae"), tmp_path / "fv", [0])
    out = dd.run(
        _tiny_dsprites_config("ad_factorvae"), tmp_path / "ad", [0], compare_workdir=tmp_path / "fv"
    )
    assert fv["method"] == "factorvae" and out["method"] == "ad_factorvae"
    seed = out["seeds"]["0"]
    assert seed["step"] == 2 and seed["eval_images"] == "renderer"
    for metric, key in [("factor_vae", "eval_accuracy"), ("beta_vae", "eval_accuracy")]:
        assert 0.0 <= seed[metric][key] <= 1.0
    assert 0.0 <= seed["mig"]["discrete_mig"] <= 1.0
    assert 0.0 <= seed["attention_overlap"]["mean"] <= 1.0
    assert out["summary"]["factor_vae_score"]["values"] == [seed["factor_vae"]["eval_accuracy"]]
    for name in ("eval.json", "traversal.png", "attention_pairs.png"):
        assert (tmp_path / "ad" / "seed_0" / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "ad" / "results.json").read_text())
    assert on_disk == out

    # a second call resumes: no training, and the evaluation at this step is reused
    log = (tmp_path / "ad" / "seed_0" / "metrics.jsonl").read_text()
    again = dd.run(_tiny_dsprites_config("ad_factorvae"), tmp_path / "ad", [0])
    assert again["seeds"]["0"] == seed
    assert (tmp_path / "ad" / "seed_0" / "metrics.jsonl").read_text() == log
    # ... and a comparison asked for later still redraws the Figure 8 panel
    pairs = tmp_path / "ad" / "seed_0" / "attention_pairs.png"
    pairs.unlink()
    fv_dir = tmp_path / "fv"
    dd.run(_tiny_dsprites_config("ad_factorvae"), tmp_path / "ad", [0], compare_workdir=fv_dir)
    assert pairs.stat().st_size > 0

    # another method in the same workdir, and a missing official array, fail before training
    with pytest.raises(ValueError, match="holds a 'ad_factorvae' run"):
        dd.run(_tiny_dsprites_config("factorvae"), tmp_path / "ad", [0])
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        dd.run(
            _tiny_dsprites_config("factorvae"), tmp_path / "x", [0],
            official_dsprites=str(tmp_path / "nope.npz"),
        )  # fmt: skip
    assert not (tmp_path / "x" / "seed_0").exists()
