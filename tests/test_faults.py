"""Runs that survive faults (issue 21): damaged checkpoints, two writers, signals, unreadable
state files, usage errors. Each case against an independent expectation: the state of an
uninterrupted run, the bytes written before, a hand-computed value."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vae_xai import seeds as seeds_lib
from vae_xai import train
from vae_xai import workdir as wd
from vae_xai.validation import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_train import tiny_setup  # noqa: E402


def _fit(workdir, num_steps, **kw):
    model, opt, params, batch_fn = tiny_setup()
    kw = {"checkpoint_every": 3, "log_every": 1, "progress": False, **kw}
    return train.fit(
        train.create_state(params, opt),
        train.vae_update_fn(model, opt),
        batch_fn,
        workdir=workdir,
        num_steps=num_steps,
        **kw,
    )


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Parameters of an uninterrupted 9-step run, and a trained workdir to copy."""
    folder = tmp_path_factory.mktemp("ref") / "run"
    state = _fit(folder, 9, keep_every=3)
    return _leaves(state), folder


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def _damage(step_dir: pathlib.Path, how: str) -> None:
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != wd.CHECKSUMS_FILE]
    data = [p for p in files if "/d/" in p.as_posix()]
    big = max(data, key=lambda p: p.stat().st_size)
    if how == "bytes":  # same size, other bytes (what silently restored NaN before)
        raw = bytearray(big.read_bytes())
        raw[64:1064] = bytes(range(256)) * 3 + bytes(232)
        big.write_bytes(bytes(raw))
    elif how == "truncated":
        big.write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    elif how == "no_metadata":
        (step_dir / "default" / "_METADATA").unlink()
    elif how == "emptied":
        import shutil

        shutil.rmtree(step_dir)
        step_dir.mkdir()


# ----------------------------------------------------------------------------- checkpoints


def test_every_saved_step_has_checksums_that_match(reference):
    _, folder = reference
    for step in (3, 6, 9):  # keep_every=3: all kept
        step_dir = folder / "checkpoints" / str(step)
        sums = json.loads((step_dir / wd.CHECKSUMS_FILE).read_text())["files"]
        assert "default/_METADATA" in sums and len(sums) > 5
        assert train.verify_checkpoint(step_dir) is None


@pytest.mark.parametrize("how", ["bytes", "truncated", "no_metadata", "emptied"])
def test_damaged_latest_step_is_moved_aside_and_training_resumes_from_intact(
    reference, tmp_path, how, caplog
):
    want, folder = reference
    run = _copy(folder, tmp_path / "run")
    latest = run / "checkpoints" / "9"
    _damage(latest, how)
    assert train.verify_checkpoint(latest) is not None or how == "emptied"
    with pytest.raises(train.CheckpointError) as err:  # evaluation: no silent fallback
        train.restore_params(run, _fit(tmp_path / "structure", 0))
    assert str(latest) in str(err.value) and "\n" not in str(err.value)
    state = _fit(run, 9, keep_every=3)  # the rerun: step 6 is restored, 7..9 retrained
    for a, b in zip(_leaves(state), want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    moved = list((run / train.DAMAGED_DIR).iterdir())
    assert [p.name.split("_")[0] for p in moved] == ["9"]  # kept, not deleted
    assert any(
        str(latest) in r.getMessage() and str(moved[0]) in r.getMessage() for r in caplog.records
    )
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [
        3,
        6,
        9,
    ]
    assert train.verify_checkpoint(run / "checkpoints" / "9") is None
    logged = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 10))


def test_no_intact_step_refuses_in_one_line_and_moves_nothing(reference, tmp_path):
    _, folder = reference
    run = _copy(folder, tmp_path / "run")
    for step in (3, 6, 9):
        _damage(run / "checkpoints" / str(step), "bytes")
    with pytest.raises(train.CheckpointError, match="no intact checkpoint") as err:
        _fit(run, 9, keep_every=3)
    assert "\n" not in str(err.value) and str(run / "checkpoints" / "3") in str(err.value)
    assert not (run / train.DAMAGED_DIR).exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["3", "6", "9"]


def test_a_step_saved_without_checksums_still_restores(reference, tmp_path):
    want, folder = reference
    run = _copy(folder, tmp_path / "run")
    for step in (3, 6, 9):  # as saved by the code before checksums
        (run / "checkpoints" / str(step) / wd.CHECKSUMS_FILE).unlink()
    restored = train.restore_params(run, _fit(tmp_path / "structure", 0))
    for a, b in zip(_leaves(restored), want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_full_disk_during_a_save_is_one_line(tmp_path, monkeypatch):
    real_save = ocp.CheckpointManager.save

    def save(self, step, *args, **kwargs):
        if step == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(train.CheckpointError) as err:
        _fit(tmp_path / "run", 9)
    msg = str(err.value)
    assert "\n" not in msg and "No space left on device" in msg
    assert str(tmp_path / "run" / "checkpoints" / "6") in msg and "resumes from step 3" in msg


def test_an_evaluation_of_another_checkpoint_gets_another_folder(tmp_path):
    cfg = ml_collections.ConfigDict({"seed": 0, "num_steps": 5, "eval": {"n": 1}})
    run = wd.start(tmp_path, cfg, experiment="e", fields=wd.Fields(), data={"d": 1})
    step_dir = tmp_path / "checkpoints" / "5"
    step_dir.mkdir(parents=True)
    (step_dir / wd.CHECKSUMS_FILE).write_text(json.dumps({"files": {"a": [1, "x"]}}))
    first = run.evaluation({"n": 1}, step=5)
    again = run.evaluation({"n": 1}, step=5)
    (step_dir / wd.CHECKSUMS_FILE).write_text(json.dumps({"files": {"a": [1, "y"]}}))
    other = run.evaluation({"n": 1}, step=5)
    assert first.dir == again.dir and other.dir != first.dir
    assert first.checkpoint != other.checkpoint
    with pytest.raises(TypeError, match="step must be an integer"):
        run.evaluation({"n": 1}, step=2.5)


# ----------------------------------------------------------------------------- one writer

HOLD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from vae_xai import workdir
    workdir.lock(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
    """
)

CFG = ml_collections.ConfigDict({"seed": 0, "num_steps": 5, "eval": {"n": 1}})


def _holder(tmp_path, folder):
    script = tmp_path / "hold.py"
    script.write_text(HOLD_SCRIPT.format(repo=str(REPO)))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(tmp_path, folder)
    try:
        t0 = time.monotonic()
        with pytest.raises(wd.WorkdirError, match=f"in use by PID {proc.pid} on host"):
            wd.start(folder, CFG, experiment="e", fields=wd.Fields(), data={"d": 1})
        assert time.monotonic() - t0 < 5
        assert not (folder / wd.RUN_FILE).exists()  # refused before writing anything
        with pytest.raises(wd.WorkdirError, match=f"PID {proc.pid}"):
            seeds_lib.run_seeds(
                folder, CFG, [0], lambda c, w: {}, experiment="e", fields=wd.Fields()
            )
    finally:
        proc.kill()
        proc.wait()
    run = wd.start(folder, CFG, experiment="e", fields=wd.Fields(), data={"d": 1})  # stale
    holder = json.loads((folder / wd.LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and run.path.exists()
    wd.release(folder)
    assert "released" in json.loads((folder / wd.LOCK_FILE).read_text())


def test_a_launcher_on_a_workdir_in_use_exits_2_in_one_line(tmp_path):
    folder = tmp_path / "run"
    proc = _holder(tmp_path, folder)
    try:
        out = _launch("quickstart", f"--workdir={folder}")
    finally:
        proc.kill()
        proc.wait()
    assert out.returncode == 2, out.stderr
    assert f"in use by PID {proc.pid}" in out.stderr and "Traceback" not in out.stderr
    assert sorted(p.name for p in folder.iterdir()) == [wd.LOCK_FILE]


# ----------------------------------------------------------------------------- signals

SIGNAL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from test_train import tiny_setup
    from vae_xai import train
    model, opt, params, batch_fn = tiny_setup()
    slow = lambda step, state: time.sleep(0.15)
    try:
        train.fit(train.create_state(params, opt), train.vae_update_fn(model, opt), batch_fn,
                  workdir=sys.argv[1], num_steps=40, checkpoint_every=50, log_every=1,
                  progress=False, hooks={{1: slow}})
    except train.Interrupted as err:
        print(err, file=sys.stderr)
        sys.exit(err.exit_code)
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_current_step_and_the_rerun_resumes_there(tmp_path, signum):
    script = tmp_path / "run.py"
    script.write_text(SIGNAL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    folder = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stderr=subprocess.PIPE, text=True
    )
    log = folder / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 5):
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    steps = [int(p.name) for p in (folder / "checkpoints").iterdir() if p.name.isdigit()]
    logged = json.loads(log.read_text().splitlines()[-1])["step"]
    assert steps == [logged] and 5 <= logged < 40  # checkpoint_every=50: saved for the signal
    assert f"at step {logged}" in err
    assert train.verify_checkpoint(folder / "checkpoints" / str(logged)) is None
    resumed = _fit(folder, 40, checkpoint_every=50)
    full = _fit(tmp_path / "full", 40, checkpoint_every=50)
    for a, b in zip(_leaves(resumed), _leaves(full), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- state files


def test_a_failed_start_does_not_block_the_fixed_rerun(tmp_path, caplog):
    bad = {"dataset": "x", "files": {"sha256": "corrupt"}}
    wd.start(tmp_path, CFG, experiment="e", fields=wd.Fields(), data=bad)
    # (loading that data failed: nothing trained, nothing evaluated) -> the data is fixed
    good = {"dataset": "x", "files": {"sha256": "fixed"}}
    run = wd.start(tmp_path, CFG, experiment="e", fields=wd.Fields(), data=good)
    assert json.loads(run.path.read_text())["data"] == good
    assert "data.files.sha256" in caplog.text
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)  # once trained, a change is refused
    with pytest.raises(wd.WorkdirError, match='data.files.sha256: "fixed" -> "corrupt"'):
        wd.start(tmp_path, CFG, experiment="e", fields=wd.Fields(), data=bad)


def test_a_refused_first_start_leaves_nothing(tmp_path):
    cfg = ml_collections.ConfigDict({"seed": 0, "num_steps": 5, "beta": float("nan")})
    with pytest.raises(ConfigError, match="beta: must be finite"):
        wd.start(tmp_path / "a", cfg, experiment="e", fields=wd.Fields(), data={})
    cfg = ml_collections.ConfigDict({"seed": 2**32, "num_steps": 5})
    with pytest.raises(ConfigError, match=r"seed: must be an integer in \[0, 2\*\*32\)"):
        wd.start(tmp_path / "a", cfg, experiment="e", fields=wd.Fields(), data={})
    (tmp_path / "b" / "seed_0" / "checkpoints" / "5").mkdir(parents=True)  # no run.json there
    (tmp_path / "b" / wd.SEEDS_FILE).write_text(json.dumps({"experiment": "e", "seeds": [0]}))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(wd.WorkdirError, match="holds checkpoints but no run.json"):
        seeds_lib.run_seeds(
            tmp_path / "b", CFG, [0, 1], lambda c, w: {}, experiment="e", fields=wd.Fields()
        )
    wd.release(tmp_path / "b")
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.name != wd.LOCK_FILE)
    assert not (tmp_path / "a").exists() and after == before
    assert json.loads((tmp_path / "b" / wd.SEEDS_FILE).read_text())["seeds"] == [0]


def test_unreadable_state_files_are_named_and_bookkeeping_is_rebuilt(tmp_path, caplog):
    run = wd.start(tmp_path / "r", CFG, experiment="e", fields=wd.Fields(), data={"d": 1})
    (tmp_path / "r" / "checkpoints" / "5").mkdir(parents=True)
    text = run.path.read_text()
    run.path.write_text(text[: len(text) // 2])  # cut
    with pytest.raises(wd.StateFileError) as err:
        wd.start(tmp_path / "r", CFG, experiment="e", fields=wd.Fields(), data={"d": 1})
    assert str(run.path) in str(err.value) and "restore it from a copy" in str(err.value)
    # seeds.json is bookkeeping: rebuilt from the seed_N folders
    parent = tmp_path / "s"
    for seed in (0, 3):
        cfg = seeds_lib.seed_config(CFG, seed)
        wd.start(parent / f"seed_{seed}", cfg, experiment="e", fields=wd.Fields(), data={})
    (parent / wd.SEEDS_FILE).write_text('{"experiment": "e", "se')
    record = seeds_lib._read_record(parent, "e")
    assert record["seeds"] == [0, 3] and record["experiment"] == "e"
    assert str(parent / wd.SEEDS_FILE) in caplog.text
    # train_wall.json is bookkeeping: counted from 0 again, rewritten
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / train.TRAIN_WALL_FILE).write_text('{"seco')
    model, opt, params, batch_fn = tiny_setup()
    state, info = train.train(
        train.create_state(params, opt),
        train.vae_update_fn(model, opt),
        batch_fn,
        workdir=folder,
        num_steps=2,
        checkpoint_every=2,
        log_every=1,
        progress=False,
    )
    assert info["total_wall_s"] == pytest.approx(info["wall_s"])
    assert json.loads((folder / train.TRAIN_WALL_FILE).read_text())["step"] == 2
    assert str(folder / train.TRAIN_WALL_FILE) in caplog.text
    assert caplog.text.count(f"{train.TRAIN_WALL_FILE} cannot be read") == 1  # said once


# ----------------------------------------------------------------------------- usage errors


def _launch(name, *args, timeout=300):
    env = {**os.environ, "VAE_XAI_TRACEBACK": ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            f"experiments.{name}",
            "--config",
            f"experiments/configs/{name}.py:smoke",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_an_override_of_the_default_config_is_a_usage_error_too(tmp_path):
    env = {**os.environ, "VAE_XAI_TRACEBACK": ""}
    out = subprocess.run(
        [sys.executable, "-m", "experiments.quickstart", f"--workdir={tmp_path / 'run'}",
         "--config.trian.num_steps=5"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "--config.trian.num_steps: no such config field" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, field",
    [
        (
            ["--config.trian.num_steps=5"],
            '--config.trian.num_steps: no such config field (did you mean "train"?)',
        ),
        (["--config.train.nmu_steps=5"], "--config.train.nmu_steps: no such config field"),
        (["--config.train.num_steps=abc"], "--config.train.num_steps=abc: invalid literal"),
        (["--config=experiments/configs/quickstart.py:bogus"], "unknown variant 'bogus'"),
        (["--config=experiments/configs/nope.py"], "--config: cannot load the config file"),
        (["--config.train.beta=nan"], "train.beta: must be finite"),
        (["--seeds="], "seeds: is empty"),
        (["--seeds=0,4294967296"], "seeds: must be integers in [0, 2**32)"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, field):
    out = _launch("quickstart", f"--workdir={tmp_path / 'run'}", *args)
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and field in lines[0], out.stderr
    assert not (tmp_path / "run").exists()


def test_parse_seeds_bounds_and_empty():
    assert seeds_lib.parse_seeds("0, 4294967295") == [0, 2**32 - 1]
    assert seeds_lib.parse_seeds(None) is None
    for bad in ("", [], "0,,1", "0,4294967296", "-1", "1.5"):
        with pytest.raises(ConfigError, match="seeds"):
            seeds_lib.parse_seeds(bad)


# ----------------------------------------------------------------------------- data, links


def test_data_identity_follows_symlinks_skips_unread_files_and_names_changes(tmp_path):
    real = tmp_path / "real_good"
    real.mkdir()
    (real / "000.png").write_bytes(b"a")
    cat = tmp_path / "bottle"
    (cat / "train").mkdir(parents=True)
    (cat / "train" / "good").symlink_to(real)
    (cat / "train" / "Thumbs.db").write_bytes(b"junk")
    (cat / "notes.txt").write_bytes(b"notes")
    kw = {"suffixes": (".png",), "ignore": ("thumbs.db",)}
    first = wd.fingerprint_files(cat, **kw)
    assert first["_listing"] == {"train/good/000.png": f"1:{_sha(b'a')[:16]}"}
    (cat / "notes.txt").unlink()  # never read: the identity is the same
    assert wd.fingerprint_files(cat, **kw) == first
    run = wd.start(tmp_path / "w", CFG, experiment="e", fields=wd.Fields(), data={"f": first})
    (run.workdir / "checkpoints" / "5").mkdir(parents=True)
    (real / "000.png").write_bytes(b"b")  # swapped behind the link
    (real / "001.png").write_bytes(b"c")
    with pytest.raises(wd.WorkdirError) as err:
        wd.start(
            tmp_path / "w",
            CFG,
            experiment="e",
            fields=wd.Fields(),
            data={"f": wd.fingerprint_files(cat, **kw)},
        )
    msg = str(err.value)
    assert "f: changed train/good/000.png" in msg and "f: added train/good/001.png" in msg
    assert "_listing" not in json.loads(run.path.read_text())["data"]["f"]


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_top_level_links_replace_copies_made_by_cp_rL(tmp_path):
    run = wd.start(tmp_path / "w", CFG, experiment="e", fields=wd.Fields(), data={})
    first = run.evaluation({"n": 1}, step=5)
    (first.dir / "fig.png").write_bytes(b"old figure")
    first.save_results({"x": 1.0})
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-rL", str(tmp_path / "w"), str(copy)], check=True)
    assert not (copy / "results.json").is_symlink()
    (copy / "own.txt").write_bytes(b"mine")
    moved = wd.Run(copy, json.loads((copy / wd.RUN_FILE).read_text()), wd.Fields())
    second = moved.evaluation({"n": 2}, step=5)
    (second.dir / "fig.png").write_bytes(b"new figure")
    (second.dir / "own.txt").write_bytes(b"not yours")
    second.save_results({"x": 2.0})
    top = json.loads((copy / "results.json").read_text())
    assert top["per_seed"]["0"]["x"] == 2.0 and (copy / "results.json").is_symlink()
    assert (copy / "fig.png").read_bytes() == b"new figure"
    assert (copy / "own.txt").read_bytes() == b"mine"  # a file of the user's own: left alone


def test_latent_chunk_must_be_an_integer():
    import jax.numpy as jnp

    from vae_xai import attention

    feats = jnp.ones((1, 2, 2, 3))

    def head_fn(a):
        mu = a.reshape(a.shape[0], -1)[:, :3]
        return mu, jnp.zeros_like(mu)

    whole = attention.latent_attention(head_fn, feats)
    np.testing.assert_allclose(attention.latent_attention(head_fn, feats, latent_chunk=2), whole)
    for bad in (2.5, 0, True):
        with pytest.raises(ValueError, match="latent_chunk must be a positive integer"):
            attention.latent_attention(head_fn, feats, latent_chunk=bad)


# ----------------------------------------------------------------------------- 21 (a), (b)

WALL_SCRIPT = SIGNAL_SCRIPT.replace("train.fit(", "train.train(")


def test_a_run_stopped_by_a_signal_adds_its_wall_time(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(WALL_SCRIPT.format(repo=str(REPO), tests=str(REPO / "tests")))
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / train.TRAIN_WALL_FILE).write_text('{"seconds": 100.0, "step": 0}')  # earlier call
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(folder)], stderr=subprocess.PIPE, text=True
    )
    log = folder / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 128 + signal.SIGTERM, err
    saved = [int(p.name) for p in (folder / "checkpoints").iterdir() if p.name.isdigit()]
    wall = json.loads((folder / train.TRAIN_WALL_FILE).read_text())
    # the step saved for the signal, and this call's seconds (>= 5 slow steps of 0.15 s, at
    # most the process's lifetime) added to the earlier 100
    assert wall["step"] == saved[0] >= 5
    assert 100.0 + 5 * 0.15 <= wall["seconds"] <= 100.0 + elapsed
    model, opt, params, batch_fn = tiny_setup()
    _, info = train.train(
        train.create_state(params, opt),
        train.vae_update_fn(model, opt),
        batch_fn,
        workdir=folder,
        num_steps=40,
        checkpoint_every=50,
        log_every=1,
        progress=False,
    )
    assert info["steps_run"] == 40 - saved[0]
    assert info["total_wall_s"] == pytest.approx(wall["seconds"] + info["wall_s"])


def test_ucsd_identity_is_exactly_the_files_the_loaders_read(tmp_path, monkeypatch):
    from data_pipelines import ucsd_ped1
    from tests.fixtures_anomaly import make_ucsd_ped1

    ped1 = make_ucsd_ped1(tmp_path / "d", n_test_clips=3, gt_clips=(1,))  # Test002/3: no masks
    read: list[pathlib.Path] = []

    class Stop(Exception):
        pass

    def record_jobs(jobs, *args, **kwargs):
        read.extend(p for job in jobs for p in job[:2] if p is not None)
        raise Stop

    parse = ucsd_ped1.parse_frame_gt_file
    monkeypatch.setattr(ucsd_ped1, "_decode_frames", record_jobs)
    monkeypatch.setattr(
        ucsd_ped1, "parse_frame_gt_file", lambda p: (read.append(pathlib.Path(p)), parse(p))[1]
    )
    for load in (ucsd_ped1.load_train, lambda r: ucsd_ped1.load_test(r, pixel_gt_only=True)):
        with pytest.raises(Stop):
            load(ped1)
    files = ucsd_ped1.data_files(ped1, pixel_gt_only=True)
    assert sorted(files["Train"] + files["Test"]) == sorted(set(read))
    assert not any("Test002" in p.as_posix() for p in files["Test"])

    def identity():
        f = ucsd_ped1.data_files(ped1)
        return {s: wd.fingerprint_files(ped1 / s, files=f[s]) for s in f}

    first = identity()
    (ped1 / "Train" / "Train001" / "notes.txt").write_text("notes")  # never read
    (ped1 / "Test" / "UCSDped2.m").write_text("x")
    (ped1 / "Test" / "Test002" / "001.tif").write_bytes(b"not read: no masks")
    assert identity() == first
    frame = ped1 / "Train" / "Train001" / "001.tif"
    frame.write_bytes(frame.read_bytes()[:-1] + b"\x01")
    assert identity()["Train"]["sha256"] != first["Train"]["sha256"]


def test_a_run_that_ends_normally_leaves_its_lock_released(tmp_path, caplog):
    folder = tmp_path / "run"
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); from vae_xai import workdir as wd; "
    subprocess.run([sys.executable, "-c", code + f"wd.lock({str(folder)!r})"], check=True)
    assert "released" in json.loads((folder / wd.LOCK_FILE).read_text())
    wd.lock(folder)
    assert "taking over" not in caplog.text  # only a killed holder's lock is taken over
    wd.release(folder)


def test_a_cp_rL_copy_is_relinked_when_the_same_evaluation_is_redone(tmp_path):
    # the rerun of a finished run redoes its last evaluation in the same folder: the copy at
    # the top then matches no output any more, and must still be replaced by the link
    counter = iter(range(100))

    def run_one(cfg, folder):
        run = wd.start(folder, cfg, experiment="e", fields=wd.Fields(), data={})
        evaluation = run.evaluation({"n": 1}, step=5)
        (evaluation.dir / "fig.png").write_bytes(b"figure %d" % next(counter))
        return evaluation.save_results({"x": 1.0})

    single, parent = tmp_path / "single", tmp_path / "parent"
    run_one(CFG, single)
    seeds_lib.run_seeds(parent, CFG, [0], run_one, experiment="e", fields=wd.Fields())
    for src in (single, parent):
        subprocess.run(["cp", "-rL", str(src), str(src) + "_copy"], check=True)
    copy = tmp_path / "single_copy"
    assert not (copy / "results.json").is_symlink()
    wd.release(single)
    run_one(CFG, copy)  # the same evaluation again (same folder, new bytes)
    for name in ("results.json", "fig.png"):
        assert (copy / name).is_symlink()
        assert (copy / name).read_bytes() == next(copy.glob(f"evaluations/*/{name}")).read_bytes()
    copy = tmp_path / "parent_copy"
    before = (copy / "results.json").read_bytes()
    seeds_lib.run_seeds(copy, CFG, [0], run_one, experiment="e", fields=wd.Fields())
    assert (copy / "results.json").is_symlink() and (copy / "results.json").read_bytes() != before


def test_a_workdir_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    a_file = tmp_path / "results.txt"
    a_file.write_text("mine")
    with pytest.raises(wd.WorkdirError, match="cannot be used as a workdir"):
        wd.lock(a_file)
    assert a_file.read_text() == "mine"
    out = _launch("quickstart", f"--workdir={a_file}", timeout=120)
    lines = [x for x in out.stderr.splitlines() if x.strip() and not x.startswith("I")]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert f"{a_file} cannot be used as a workdir" in lines[0]


def test_a_save_failed_in_tensorstore_is_one_line(tmp_path, monkeypatch):
    # what orbax raises when the disk fills or a file outgrows its limit during a save
    real_save = ocp.CheckpointManager.save
    text = 'OUT_OF_RANGE: Error writing "x" in OCDBT database: Failed to write 9 bytes to file 13'

    def save(self, step, *args, **kwargs):
        if step == 6:
            raise ValueError(f"{text}: {os.strerror(errno.EFBIG)}")
        return real_save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    with pytest.raises(train.CheckpointError) as err:
        _fit(tmp_path / "run", 9)
    msg = str(err.value)
    assert "\n" not in msg and os.strerror(errno.EFBIG) in msg and "resumes from step 3" in msg


def test_a_launcher_whose_save_outgrows_the_disk_prints_one_line(tmp_path):
    import resource

    def limit():  # a 1 MB file limit: the first checkpoint's data files do not fit
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    folder = tmp_path / "run"
    env = {**os.environ, "VAE_XAI_TRACEBACK": ""}
    out = subprocess.run(
        [sys.executable, "-m", "experiments.quickstart", f"--workdir={folder}"]
        + ["--config=experiments/configs/quickstart.py:smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        preexec_fn=limit,
    )
    lines = [
        x
        for x in out.stderr.replace("\r", "\n").splitlines()
        if x.strip()
        and not x.startswith("I")
        and "step/s" not in x
        and "s/step" not in x
        and "?step" not in x
    ]
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-3000:]
    assert f"saving step 15 to {folder / 'checkpoints' / '15'} failed" in lines[0]
    assert not [p for p in (folder / "checkpoints").iterdir() if p.name.isdigit()]
