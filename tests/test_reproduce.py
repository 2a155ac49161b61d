"""experiments.reproduce: job selection, the --estimate probe, and a resumable run."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import optax
import pytest

from experiments.configs import get_config
from vae_xai import train
from vae_xai.experiments import reproduce
from vae_xai.models.conv_vae import ConvVAE

QUICK = reproduce.Job("fig1_quickstart", "Fig. 1", "quickstart", "smoke")


def test_select_by_job_or_table():
    assert [j.name for j in reproduce.select(["table3"])] == [
        "table3_beta_vae",
        "table3_factorvae",
        "table3_ad_factorvae",
    ]
    assert len(reproduce.select(["table2"])) == 15  # one job per MVTec-AD category
    assert reproduce.select(None) == list(reproduce.JOBS)
    with pytest.raises(ValueError, match="no job 'table9'"):
        reproduce.select(["table9"])


def test_probe_times_steps_and_stops_fit(tmp_path):
    model = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=2)
    optimizer = optax.adam(1e-2)
    data = np.zeros((4, 8, 8, 1), np.float32)

    def fit(workdir, num_steps):
        state = train.init_state(model, optimizer, (8, 8, 1), key=jax.random.key(0))
        return train.fit(
            state,
            train.vae_update_fn(model, optimizer),
            lambda step: {"image": data},
            workdir=workdir,
            num_steps=num_steps,
            progress=False,
        )

    with train.probe(3), pytest.raises(train.ProbeDone) as done:
        fit(tmp_path / "a", 100)
    info = done.value.info
    assert info["steps_timed"] == 3 and info["num_steps"] == 100
    assert info["s_per_step"] > 0 and info["compile_s"] > 0 and info["setup_s"] >= 0
    with train.probe(10):  # fewer steps than probed: fit simply finishes
        assert int(fit(tmp_path / "b", 4).step) == 4
    assert int(fit(tmp_path / "c", 2).step) == 2  # outside the context: no probe


@pytest.mark.slow
def test_estimate_projects_and_skips_missing_data(tmp_path):
    jobs = [QUICK, reproduce.Job("fig4_mnist", "Fig. 4", "mnist_attention", "smoke", "mnist")]
    lines = []
    est = reproduce.estimate(
        jobs,
        get_config=get_config,
        data_dir=tmp_path,
        steps=2,
        overrides={"train.num_steps": 50},
        log=lines.append,
    )
    q = est["jobs"]["fig1_quickstart"]
    assert q["steps_timed"] == 2 and q["trainings"] == 1 and q["num_steps"] == 50
    expected = q["setup_s"] + q["compile_s"] + q["s_per_step"] * 49
    assert q["projected_train_s"] == pytest.approx(expected)
    assert "no data at" in est["jobs"]["fig4_mnist"]["skipped"]
    assert est["tables"]["Fig. 4"]["skipped"] == 1
    assert est["total_projected_train_s"] == pytest.approx(expected)
    text = reproduce.format_estimate(est)
    assert "fig1_quickstart" in text and "total (training only)" in text
    assert len(lines) == 2


@pytest.mark.e2e
@pytest.mark.slow
def test_run_writes_tables_and_resumes(tmp_path):
    doc = reproduce.run(
        [QUICK], tmp_path / "repro", get_config=get_config, data_dir=None, log=lambda s: None
    )
    row = doc["jobs"]["fig1_quickstart"]
    assert pathlib.Path(row["results"]).exists()
    md = (tmp_path / "repro" / "reproduction.md").read_text()
    assert "| fig1_quickstart | Fig. 1 |" in md
    saved = json.loads((tmp_path / "repro" / "reproduction.json").read_text())
    assert saved["jobs"]["fig1_quickstart"]["table"] == "Fig. 1"
    # a rerun resumes: nothing left to train
    reproduce.run(
        [QUICK], tmp_path / "repro", get_config=get_config, data_dir=None, log=lambda s: None
    )
    wall = json.loads((tmp_path / "repro" / "fig1_quickstart" / "train_wall.json").read_text())
    assert wall["step"] == QUICK.config(get_config).train.num_steps
