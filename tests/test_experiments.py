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
