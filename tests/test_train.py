"""Training loop: one-step smoke test, exact resume after a crash or SIGKILL, fake devices."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_xai import losses, train
from vae_xai.models import ConvVAE

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_setup(seed: int = 0):
    model = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=3)
    opt = optax.adam(1e-2)
    params = model.init(jax.random.key(seed), jnp.zeros((1, 8, 8, 1)))["params"]
    # 32 binary images made of 4 templates (learnable, unlike pixel noise)
    templates = np.zeros((4, 8, 8, 1), np.float32)
    templates[0, :4], templates[1, 4:], templates[2, :, :4], templates[3, 2:6, 2:6] = 1, 1, 1, 1
    data = templates[np.random.default_rng(0).integers(0, 4, 32)]

    def batch_fn(step):
        i = (step * 8) % 32
        return {"image": data[i : i + 8]}

    return model, opt, params, batch_fn


def test_one_step_matches_hand_written_update():
    model, opt, params, batch_fn = tiny_setup()
    update = train.vae_update_fn(model, opt)
    state = train.create_state(jax.tree.map(jnp.copy, params), opt)  # the step donates it
    step = train.jit_step(update, train.make_mesh(), seed=3)
    batch = batch_fn(0)
    new_state, metrics = step(state, batch)
    # independent reference: the same loss written out with the step-0 key
    key = jax.random.fold_in(jax.random.key(3), 0)

    def loss_fn(p):
        out = model.apply({"params": p}, batch["image"], key)
        return jnp.mean(
            losses.bernoulli_nll(out["logits"], batch["image"])
            + losses.gaussian_kl(out["mu"], out["logvar"])
        )

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, _ = opt.update(grads, opt.init(params), params)
    want = optax.apply_updates(params, updates)
    assert int(new_state.step) == 1
    np.testing.assert_allclose(float(metrics["loss"]), float(loss), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_loss_decreases_and_metrics_logged(tmp_path):
    model, opt, params, batch_fn = tiny_setup()
    state = train.fit(
        train.create_state(params, opt),
        train.vae_update_fn(model, opt),
        batch_fn,
        workdir=tmp_path,
        num_steps=40,
        checkpoint_every=20,
        log_every=1,
        progress=False,
    )
    assert int(state.step) == 40
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == list(range(1, 41))
    first = np.mean([r["loss"] for r in logs[:4]])  # one pass over the 4 batches
    last = np.mean([r["loss"] for r in logs[-4:]])
    assert last < first - 1.0, (first, last)


def _fit(workdir, num_steps, hooks=None):
    model, opt, params, batch_fn = tiny_setup()
    return train.fit(
        train.create_state(params, opt),
        train.vae_update_fn(model, opt),
        batch_fn,
        workdir=workdir,
        num_steps=num_steps,
        checkpoint_every=3,
        log_every=1,
        progress=False,
        hooks=hooks,
    )


def test_crash_and_resume_equals_uninterrupted(tmp_path):
    full = _fit(tmp_path / "full", 10)

    def crash(step, state):
        if step == 7:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "crashed", 10, hooks={1: crash})
    logged = (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(logged[-1])["step"] == 7  # logged past the last checkpoint (6)
    resumed = _fit(tmp_path / "crashed", 10)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    steps = [
        json.loads(x)["step"]
        for x in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(1, 11))  # no duplicated log lines after resuming


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from test_train import tiny_setup
    from vae_xai import train
    model, opt, params, batch_fn = tiny_setup()
    slow = lambda step, state: time.sleep(0.15)
    train.fit(train.create_state(params, opt), train.vae_update_fn(model, opt), batch_fn,
              workdir=sys.argv[1], num_steps=int(sys.argv[2]), checkpoint_every=4,
              log_every=1, progress=False, hooks={{1: slow}})
    """
)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    """A real ``kill -9`` during training loses nothing already checkpointed."""
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    workdir = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(workdir), "40"])
    log = workdir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 10:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(log.read_text().splitlines())
    assert killed_at < 40
    resumed = _fit(workdir, 40)
    full = _fit(tmp_path / "full", 40)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(full.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    import jax, numpy as np
    assert len(jax.devices()) == 4, jax.devices()
    from test_train import tiny_setup
    from vae_xai import train
    from vae_xai.sharding import make_mesh, shard_batch
    results = []
    for n in (4, 1):
        model, opt, params, batch_fn = tiny_setup()
        mesh = make_mesh(n)
        step = train.jit_step(train.vae_update_fn(model, opt), mesh)
        state = jax.device_put(train.create_state(params, opt), train.replicated(mesh))
        for s in range(3):
            batch = shard_batch(batch_fn(s), mesh)
            if n == 4:
                assert len(batch["image"].sharding.device_set) == 4
            state, metrics = step(state, batch)
        results.append(jax.tree.leaves(jax.device_get(state.params)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    try:
        shard_batch({{"image": np.zeros((6, 8, 8, 1))}}, make_mesh(4))
    except ValueError as e:
        assert "multiple of the number of devices" in str(e)
    else:
        raise AssertionError("expected a ValueError")
    print("OK")
    """
)


def test_data_parallel_on_four_fake_devices_matches_one(tmp_path):
    script = tmp_path / "multi.py"
    script.write_text(MULTI_DEVICE_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def test_restore_params_errors_clearly(tmp_path):
    _, opt, params, _ = tiny_setup()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train.restore_params(tmp_path / "empty", train.create_state(params, opt))


def _poisoned(update_fn, bad_step: int):
    """``update_fn`` whose batch is NaN when ``state.step == bad_step`` (the step that ends at
    ``bad_step + 1`` logs NaN metrics and writes NaN parameters)."""

    def update(state, batch, key):
        image = jnp.where(state.step == bad_step, jnp.nan, batch["image"])
        return update_fn(state, {**batch, "image": image}, key)

    return update


def test_divergence_is_never_checkpointed(tmp_path):
    """checkpoint_every=2 is not a multiple of log_every=5: the old loop checked finiteness at
    log steps only, so it saved the NaN states of steps 4 and 6 and pruned the good step 2."""
    model, opt, params, batch_fn = tiny_setup()

    def fresh():  # fit donates the state's buffers
        return train.create_state(jax.tree.map(jnp.copy, params), opt)

    update = train.vae_update_fn(model, opt)
    kwargs = dict(workdir=tmp_path, num_steps=12, checkpoint_every=2, log_every=5, progress=False)
    with pytest.raises(train.DivergenceError) as err:
        train.fit(fresh(), _poisoned(update, 2), batch_fn, **kwargs)
    message = str(err.value)
    assert "at step 3" in message and "loss" in message and "params/model_state" in message
    assert str(tmp_path.absolute() / "checkpoints" / "2") in message
    # only the last finite checkpoint exists, and it is step 2 of an undisturbed run
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2"]
    restored = train.restore_params(tmp_path, fresh())
    clean = train.fit(
        fresh(),
        update,
        batch_fn,
        workdir=tmp_path / "clean",
        num_steps=2,
        checkpoint_every=2,
        log_every=5,
        progress=False,
    )
    assert int(restored.step) == 2
    for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(clean.params), strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
    assert not (tmp_path / "metrics.jsonl").read_text()  # nothing logged: first log at 5
    # a rerun resumes from the finite step 2 (here with the poison removed) and completes
    final = train.fit(fresh(), update, batch_fn, **kwargs)
    assert int(final.step) == 12
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(final.params))


def test_divergence_found_at_a_log_step_before_any_save(tmp_path):
    model, opt, params, batch_fn = tiny_setup()
    update = _poisoned(train.vae_update_fn(model, opt), 0)

    def fresh():
        return train.create_state(params, opt)

    with pytest.raises(train.DivergenceError, match="at step 1 .*no checkpoint was saved"):
        train.fit(
            fresh(),
            update,
            batch_fn,
            workdir=tmp_path,
            num_steps=10,
            checkpoint_every=4,
            log_every=1,
            progress=False,
        )
    assert train.checkpoint_manager(tmp_path).latest_step() is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(checkpoint_every=0), "checkpoint_every must be a positive integer; got 0"),
        (dict(log_every=0), "log_every must be a positive integer; got 0"),
        (dict(num_steps=-5), "num_steps must be an integer >= 0; got -5"),
        (dict(hooks={0: print}), "hook periods"),
        (dict(checkpoint_every=2, keep_every=3), "keep_every must be a positive multiple"),
    ],
)
def test_fit_rejects_bad_periods_before_compiling(tmp_path, kwargs, match):
    model, opt, params, batch_fn = tiny_setup()

    def fresh():
        return train.create_state(params, opt)

    def never(step):
        raise AssertionError("no batch may be drawn")

    with pytest.raises(ValueError, match=match):
        train.fit(
            fresh(),
            train.vae_update_fn(model, opt),
            never,
            workdir=tmp_path / "w",
            progress=False,
            **{"num_steps": 4, **kwargs},
        )
    assert not (tmp_path / "w").exists()


def test_a_schedule_object_equals_its_keyword_arguments(tmp_path):
    """``schedule=Schedule(...)`` trains exactly as its fields passed as keywords; giving both,
    or neither it nor ``num_steps``, is a TypeError; a bad field fails when it is built."""
    model, opt, params, batch_fn = tiny_setup()
    update = train.vae_update_fn(model, opt)
    schedule = train.Schedule(num_steps=4, checkpoint_every=2, log_every=1)
    by_object = train.fit(
        train.create_state(params, opt),
        update,
        batch_fn,
        workdir=tmp_path / "a",
        schedule=schedule,
        progress=False,
    )
    by_keywords = _fit(tmp_path / "b", 4)  # checkpoint_every=3: a different save, same steps
    for a, b in zip(
        jax.tree.leaves(by_object.params), jax.tree.leaves(by_keywords.params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with train.checkpoint_manager(tmp_path / "a") as manager:
        assert sorted(manager.all_steps()) == [2, 4]
    with pytest.raises(TypeError, match="not both"):
        train.fit(
            by_object, update, batch_fn, workdir=tmp_path / "c", schedule=schedule, num_steps=4
        )
    with pytest.raises(TypeError, match="num_steps"):
        train.train(by_object, update, batch_fn, workdir=tmp_path / "c")
    with pytest.raises(ValueError, match="keep_every must be a positive multiple"):
        train.Schedule(num_steps=4, checkpoint_every=2, keep_every=3)
    assert not (tmp_path / "c").exists()


def test_train_entry_reports_steps_wall_and_last_metrics(tmp_path):
    model, opt, params, batch_fn = tiny_setup()
    update = train.vae_update_fn(model, opt)

    def run(num_steps):
        return train.train(
            train.create_state(jax.tree.map(jnp.copy, params), opt),
            update,
            batch_fn,
            workdir=tmp_path,
            num_steps=num_steps,
            checkpoint_every=2,
            log_every=2,
            progress=False,
        )

    state, info = run(4)
    assert int(state.step) == 4 and (info["steps"], info["steps_run"]) == (4, 4)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert info["last"] == json.loads(lines[-1]) and info["last"]["step"] == 4
    assert info["total_wall_s"] == info["wall_s"] > 0
    wall = json.loads((tmp_path / "train_wall.json").read_text())
    assert wall == {"seconds": info["total_wall_s"], "step": 4}

    # nothing left to train: steps_run 0, the accumulated wall time is reported, not changed
    state, again = run(4)
    assert (again["steps"], again["steps_run"]) == (4, 0)
    assert again["total_wall_s"] == info["total_wall_s"]
    assert json.loads((tmp_path / "train_wall.json").read_text()) == wall

    # a larger num_steps continues: the total is the sum of the two calls that trained
    state, more = run(6)
    assert (more["steps"], more["steps_run"]) == (6, 2) and more["last"]["step"] == 6
    assert more["total_wall_s"] == pytest.approx(info["wall_s"] + more["wall_s"])
    assert json.loads((tmp_path / "train_wall.json").read_text())["step"] == 6


def test_init_state_puts_extra_collections_in_model_state():
    import flax.linen as nn

    class WithBN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.BatchNorm(use_running_average=not train)(nn.Dense(3)(x))

    state = train.init_state(WithBN(), optax.sgd(0.1), (5,), key=jax.random.key(1))
    want = WithBN().init(jax.random.key(1), jnp.zeros((1, 5)))
    assert set(state.model_state) == {"batch_stats"} and int(state.step) == 0
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(want["params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    # the default key is rbg (fast to compile); a threefry key reproduces model.init
    default = train.init_state(WithBN(), optax.sgd(0.1), (5,), seed=1)
    assert jax.tree.structure(default.params) == jax.tree.structure(state.params)


def test_keep_every_keeps_those_steps_and_restore_params_reads_any_kept_step(tmp_path):
    model, opt, params, batch_fn = tiny_setup()
    update = train.vae_update_fn(model, opt)

    def fresh():
        return train.create_state(jax.tree.map(jnp.copy, params), opt)

    train.fit(fresh(), update, batch_fn, workdir=tmp_path / "long", num_steps=7,
              checkpoint_every=1, keep_every=2, progress=False)  # fmt: skip
    kept = sorted(int(p.name) for p in (tmp_path / "long" / "checkpoints").iterdir())
    assert kept == [2, 4, 6, 7]  # the multiples of 2, and the latest two (6, 7)
    # independent reference: a run stopped at step 4 (same keys and batches)
    short = train.fit(fresh(), update, batch_fn, workdir=tmp_path / "short", num_steps=4,
                      progress=False)  # fmt: skip
    got = train.restore_params(tmp_path / "long", fresh(), step=4)
    assert int(got.step) == 4
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(short.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 3 .*\[2, 4, 6, 7\]"):
        train.restore_params(tmp_path / "long", fresh(), step=3)
