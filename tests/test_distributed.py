"""Multi-process data parallelism: 2 local CPU processes x 2 fake devices == 1 process x 4.

Each test starts real processes (``tests/distributed_worker.py``) that talk over
``jax.distributed`` with gloo collectives on the CPU, as several hosts would.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from vae_xai import distributed

WORKER = pathlib.Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(workdir, out, *, processes: int, devices: int, num_steps=4, die_after=None, eval_dir=None):
    """Run the worker on ``processes`` processes; returns their (returncode, output)."""
    base = [sys.executable, str(WORKER), "--workdir", str(workdir), "--out", str(out)]
    base += ["--num_steps", str(num_steps)]
    if die_after:
        base += ["--die_after", str(die_after)]
    if eval_dir:
        base += ["--eval_dir", str(eval_dir)]
    if processes == 1:
        cmds = [base]
    else:
        port = _free_port()
        cmds = [
            base
            + ["--coordinator", f"localhost:{port}", "--num_processes", str(processes)]
            + ["--process_id", str(i)]
            for i in range(processes)
        ]
    return _start_and_wait(cmds, devices=devices, timeout=240)


def _start_and_wait(cmds, *, devices: int, timeout: float, cwd=None):
    """Start every command at once (they rendezvous), wait for all; [(returncode, output)].
    A process that times out kills the others."""
    procs = [
        subprocess.Popen(c, env=_env(devices), cwd=cwd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for c in cmds
    ]  # fmt: skip
    results = []
    for p in procs:
        try:
            output = p.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        results.append((p.returncode, output))
    return results


def _params(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _assert_ok(results):
    for code, output in results:
        assert code == 0, output[-3000:]


@pytest.mark.e2e
@pytest.mark.slow
def test_two_processes_equal_one_process_and_resume(tmp_path):
    ref = _run(tmp_path / "one", tmp_path / "one.npz", processes=1, devices=4)
    _assert_ok(ref)
    assert "process 0/1 devices 4 step 4" in ref[0][1]

    two = _run(
        tmp_path / "two", tmp_path / "two.npz", processes=2, devices=2, eval_dir=tmp_path / "eval"
    )
    _assert_ok(two)
    assert "process 1/2 devices 4 step 4" in two[1][1]
    a, b = _params(tmp_path / "one.npz"), _params(tmp_path / "two.npz")
    assert a.keys() == b.keys() and int(b["step"]) == 4
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # metrics written once (process 0), one line per step
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [int(__import__("json").loads(ln)["step"]) for ln in lines] == [1, 2, 3, 4]

    _check_sharded_evaluation(tmp_path / "eval")

    # both processes killed after step 3 (checkpoint at 2), then restarted: resumes from 2
    killed = _run(tmp_path / "kill", tmp_path / "kill.npz", processes=2, devices=2, die_after=3)
    assert [code for code, _ in killed] == [3, 3], [o[-2000:] for _, o in killed]
    assert not (tmp_path / "kill.npz").exists()
    resumed = _run(tmp_path / "kill", tmp_path / "kill.npz", processes=2, devices=2)
    _assert_ok(resumed)
    c = _params(tmp_path / "kill.npz")
    for k in a:
        np.testing.assert_allclose(c[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)


def _check_sharded_evaluation(eval_dir: pathlib.Path) -> None:
    """The maps the 2 processes computed, each its share of the batches, equal the maps this
    (single) process computes from the same parameters; figures and JSON came from process 0."""
    import flax.serialization
    import jax
    import optax

    from vae_xai import train
    from vae_xai.localization import maps
    from vae_xai.models.conv_vae import ConvVAE

    assert sorted(p.name for p in eval_dir.glob("*_process*")) == [
        "figure_process0.png",
        "json_process0.json",
    ]
    model = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=2)
    template = train.init_state(model, optax.adam(1e-2), (8, 8, 1), key=jax.random.key(0)).params
    params = flax.serialization.from_bytes(template, (eval_dir / "params.msgpack").read_bytes())
    variables = {"params": params}
    data = np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32) > 0.5
    images = data.astype(np.float32)[:18]
    mu, logvar = maps.encoder_statistics(model, variables, images, batch_size=4)
    want = {
        "mu": mu,
        "logvar": logvar,
        "recon": maps.reconstruction_error_maps(model, variables, images, batch_size=4),
        "attention": maps.anomaly_attention_maps(
            model, variables, images, layer="conv1", key=jax.random.key(7), batch_size=4
        ),
    }
    with np.load(eval_dir / "maps.npz", allow_pickle=False) as got:
        for name, value in want.items():
            assert got[name].shape == value.shape, name
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.abs(want["attention"]).max() > 0  # a map that says something


def test_map_batches_with_one_process_is_the_loop():
    calls = []
    out = distributed.map_batches(lambda b: calls.append(b) or {"b": np.full(2, b)}, 3)
    assert calls == [0, 1, 2] and [o["b"].tolist() for o in out] == [[0, 0], [1, 1], [2, 2]]
    assert distributed.map_batches(lambda b: b, 0) == []
    with pytest.raises(ValueError, match="num_batches"):
        distributed.map_batches(lambda b: b, -1)


def test_flag_combinations_are_checked_before_connecting():
    assert distributed.initialize() is False  # one process: nothing to do
    with pytest.raises(distributed.DistributedConfigError, match="process_id"):
        distributed.initialize("localhost:1234", 2, None)
    with pytest.raises(distributed.DistributedConfigError, match=r"0\.\.1"):
        distributed.initialize("localhost:1234", 2, 2)
    with pytest.raises(distributed.DistributedConfigError, match="HOST:PORT"):
        distributed.initialize("localhost", 2, 0)
    with pytest.raises(distributed.DistributedConfigError, match="coordinator_address"):
        distributed.initialize(None, 2, 1)


def test_process_rows_split_the_global_batch_in_order():
    rows = [distributed.process_rows(12, process_index=p, process_count=3) for p in range(3)]
    assert rows == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert np.concatenate([np.arange(12)[r] for r in rows]).tolist() == list(range(12))
    with pytest.raises(distributed.DistributedConfigError, match="multiple of 3"):
        distributed.process_rows(10, process_index=0, process_count=3)


def test_launcher_refuses_partial_distributed_flags_before_any_work(tmp_path):
    """Every training launcher has the distributed flags; a bad combination is a usage error
    naming the missing flag, before any data, workdir or compilation."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.quickstart", f"--workdir={tmp_path / 'w'}"]
        + ["--num_processes=2", "--process_id=1"],
        env=_env(1),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "coordinator_address" in proc.stderr
    assert not (tmp_path / "w").exists()


def _launch(args, *, processes: int, devices: int):
    """``python -m experiments.quickstart ARGS`` on ``processes`` processes."""
    base = [sys.executable, "-m", "experiments.quickstart", *args]
    port = _free_port()
    cmds = (
        [base]
        if processes == 1
        else [
            base
            + [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}"]
            + [f"--process_id={i}"]
            for i in range(processes)
        ]
    )
    return _start_and_wait(cmds, devices=devices, timeout=300, cwd=ROOT)


@pytest.mark.e2e
@pytest.mark.slow
def test_launcher_on_two_processes_equals_one_process(tmp_path):
    """A real launcher end to end on 2 processes x 1 device (training, evaluation, figures,
    results) against the same run in this process (1 device): the same numbers, written once
    by process 0."""
    import json

    from experiments.configs.quickstart import get_config
    from vae_xai.experiments import quickstart

    cfg = get_config("smoke")
    cfg.train.update(num_steps=4, checkpoint_every=2, log_every=2)
    quickstart.train_and_evaluate(cfg, tmp_path / "one", progress=False)
    common = [
        "--config=experiments/configs/quickstart.py:smoke", "--config.train.num_steps=4",
        "--config.train.checkpoint_every=2", "--config.train.log_every=2",
        "--steps_per_dispatch=2",
    ]  # fmt: skip
    two = _launch([f"--workdir={tmp_path / 'two'}", *common], processes=2, devices=1)
    _assert_ok(two)
    a = json.loads((tmp_path / "one" / "results.json").read_text())["per_seed"]["0"]
    b = json.loads((tmp_path / "two" / "results.json").read_text())["per_seed"]["0"]
    assert a["steps"] == b["steps"] == 4
    assert b["held_out_negative_elbo"] == pytest.approx(a["held_out_negative_elbo"], rel=1e-4)
    for k in a["kl_per_latent"]:
        assert b["kl_per_latent"][k] == pytest.approx(a["kl_per_latent"][k], rel=1e-3, abs=1e-4)
    record = json.loads((tmp_path / "two" / "run.json").read_text())
    assert record["device"]["process_count"] == 2, record["device"]
    lines = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [2, 4]  # logged once, by process 0
    for name in ("latent_attention.png", "reconstructions.png"):
        assert (tmp_path / "two" / name).stat().st_size > 1000
    assert not list((tmp_path / "two").rglob(".*.tmp-*"))  # no half-written file left
