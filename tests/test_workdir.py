"""Run identity (vae_xai.workdir) and config validation (vae_xai.validation) on hand-made
cases: what is recorded, what is refused (with which message), what may change."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess

import ml_collections
import pytest

from vae_xai import validation as v
from vae_xai import workdir as wd
from vae_xai.experiments.dsprites_renderer import renderer_identity
from vae_xai.models import ConvVAE

FIELDS = wd.Fields(
    num_steps="train.num_steps",
    eval=("eval",),
    schedule=("train.checkpoint_every",),
)


def config(**train):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = dict(width=4)
    c.train = {**dict(num_steps=10, learning_rate=1e-3, batch_size=8, checkpoint_every=5), **train}
    c.eval = dict(layers=("conv1",), batch_size=4)
    return c


DATA = {"dataset": "toy", "category": "a", "files": {"sha256": "00"}}


def start(workdir, cfg, data=DATA, experiment="exp"):
    return wd.start(workdir, cfg, experiment=experiment, fields=FIELDS, data=data)


def fake_checkpoint(workdir: pathlib.Path, step: int, sub: str = "") -> None:
    (workdir / sub / "checkpoints" / str(step)).mkdir(parents=True)


# ----------------------------------------------------------------------------- fingerprints


def test_fingerprint_is_sha256_over_paths_sizes_and_contents(tmp_path):
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_bytes(b"hello")
    (root / "sub" / "a.bin").write_bytes(b"\x00\x01")
    (root / ".hidden").write_bytes(b"ignored")
    want = hashlib.sha256()
    for rel, content in [("b.txt", b"hello"), ("sub/a.bin", b"\x00\x01")]:
        want.update(f"{rel}\0{len(content)}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    got = wd.fingerprint_files(root)
    listing = got.pop("_listing")
    assert listing == {
        "b.txt": f"5:{hashlib.sha256(b'hello').hexdigest()[:16]}",
        "sub/a.bin": f"2:{hashlib.sha256(bytes([0, 1])).hexdigest()[:16]}",
    }
    assert got == {"sha256": want.hexdigest(), "num_files": 2, "bytes": 7, "mode": "content"}
    # the same files elsewhere: the same fingerprint; one changed byte: another
    moved = tmp_path / "moved"
    root.rename(moved)
    assert wd.fingerprint_files(moved) == {**got, "_listing": listing}
    (moved / "b.txt").write_bytes(b"hellO")
    assert wd.fingerprint_files(moved)["sha256"] != got["sha256"]
    # above the size limit the modification time stands in for the content
    stat = wd.fingerprint_files(moved, content_limit=0)
    assert stat["mode"] == "stat" and stat["sha256"] != got["sha256"]
    only = wd.fingerprint_files(moved, files=[moved / "b.txt"])
    assert only["num_files"] == 1 and only["bytes"] == 5
    with pytest.raises(FileNotFoundError, match="nope"):
        wd.fingerprint_files(tmp_path / "nope")


def test_renderer_identity_is_stable():
    a, b = renderer_identity(), renderer_identity()
    assert a == b and len(a["sha256_of_64_renders"]) == 64


# ----------------------------------------------------------------------------- starts


def test_first_start_records_the_run(tmp_path):
    run = start(tmp_path / "w", config())
    record = json.loads((tmp_path / "w" / "run.json").read_text())
    assert record["experiment"] == "exp" and record["data"] == DATA
    assert record["config"] == json.loads(json.dumps(config().to_dict()))  # tuples -> lists
    assert record["versions"]["vae_xai"] and record["device"]["platform"] == "cpu"
    assert set(record["git"]) >= {"commit"} and len(record["starts"]) == 1
    assert run.record == record
    assert not list((tmp_path / "w").glob(".*tmp*"))  # the atomic write left no temp file


def test_git_commit_is_none_outside_a_checkout(tmp_path, monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    start(tmp_path, config())
    assert json.loads((tmp_path / "run.json").read_text())["git"] == {"commit": None}


def test_training_fields_and_data_are_compared(tmp_path):
    start(tmp_path, config())
    fake_checkpoint(tmp_path, 5)  # (an untrained record is replaced instead: test_faults)
    before = (tmp_path / "run.json").read_text()
    changed = config(learning_rate=1e-2)
    changed.train.batch_size = 16
    changed.model.width = 8
    with pytest.raises(wd.WorkdirError) as err:
        start(tmp_path, changed)
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert "  model.width: 4 -> 8\n" in msg
    assert "  train.batch_size: 8 -> 16\n" in msg
    assert "  train.learning_rate: 0.001 -> 0.01\n" in msg
    assert "seed" not in msg and "eval" not in msg.split("Use another")[0]
    with pytest.raises(wd.WorkdirError, match=r'data.category: "a" -> "b"'):
        start(tmp_path, config(), data={**DATA, "category": "b"})
    with pytest.raises(wd.WorkdirError, match="holds a 'exp' run; this is 'other'"):
        start(tmp_path, config(), experiment="other")
    added = config()
    added.model.depth = 3
    with pytest.raises(wd.WorkdirError, match='model.depth: "<absent>" -> 3'):
        start(tmp_path, added)
    assert (tmp_path / "run.json").read_text() == before  # refusals write nothing


def test_a_trained_run_is_not_offered_for_deletion(tmp_path):
    start(tmp_path, config())
    fake_checkpoint(tmp_path, 10)
    with pytest.raises(wd.WorkdirError) as err:
        start(tmp_path, config(learning_rate=0.5))
    assert "train.learning_rate: 0.001 -> 0.5" in str(err.value)
    assert "deleting" not in str(err.value)


def test_eval_and_schedule_fields_may_change_and_num_steps_may_grow(tmp_path):
    start(tmp_path, config())
    fake_checkpoint(tmp_path, 10)
    later = config(checkpoint_every=2)
    later.train.num_steps = 30
    later.eval.layers = ("conv2",)
    run = start(tmp_path, later)
    entry = run.record["starts"][-1]
    assert entry["num_steps"] == 30 and entry["continues_from_step"] == 10
    assert entry["changed"] == {"train.checkpoint_every": [5, 2], "train.num_steps": [10, 30]}
    assert run.record["config"]["train"]["num_steps"] == 10  # the first start's record
    assert run.record["last_config"]["train"]["num_steps"] == 30


def test_smaller_num_steps_than_trained_is_refused(tmp_path):
    start(tmp_path, config())
    fake_checkpoint(tmp_path, 10, sub="seed_0")  # per-seed subfolders count too
    assert wd.trained_step(tmp_path) == 10
    shorter = config()
    shorter.train.num_steps = 4
    with pytest.raises(wd.WorkdirError, match="trained to step 10; train.num_steps=4 is smaller"):
        start(tmp_path, shorter)
    # an interrupted run (trained to 3 of 10) may still be given any num_steps >= 3
    other = tmp_path / "other"
    start(other, config())
    fake_checkpoint(other, 3)
    fewer = config()
    fewer.train.num_steps = 5
    assert start(other, fewer).record["starts"][-1]["num_steps"] == 5


def test_outputs_without_a_record_are_refused(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(wd.WorkdirError, match="no run.json"):
        start(tmp_path, config())
    legacy = tmp_path / "legacy"
    fake_checkpoint(legacy, 7)
    with pytest.raises(wd.WorkdirError, match="no run.json"):
        start(legacy, config())
    assert not (legacy / "run.json").exists()


def test_open_trained_checks_without_recording(tmp_path):
    with pytest.raises(wd.WorkdirError, match="no run.json"):
        wd.open_trained(tmp_path, config(), experiment="exp", fields=FIELDS)
    start(tmp_path, config())
    with pytest.raises(wd.WorkdirError, match="trained to step None, not train.num_steps=10"):
        wd.open_trained(tmp_path, config(), experiment="exp", fields=FIELDS)
    fake_checkpoint(tmp_path, 10)
    before = (tmp_path / "run.json").read_text()
    run = wd.open_trained(tmp_path, config(), experiment="exp", fields=FIELDS)
    assert run.workdir == tmp_path and (tmp_path / "run.json").read_text() == before
    with pytest.raises(wd.WorkdirError, match="train.learning_rate: 0.001 -> 0.1"):
        wd.open_trained(tmp_path, config(learning_rate=0.1), experiment="exp", fields=FIELDS)


# ----------------------------------------------------------------------------- evaluations


def test_each_evaluation_has_its_own_folder_and_the_newest_is_linked(tmp_path):
    run = start(tmp_path, config())
    first = run.evaluation(run.eval_config(config()), step=10)
    assert first.dir.parent == tmp_path / "evaluations" and first.dir.name.startswith("step10_")
    assert first.config == {"eval.layers": ["conv1"], "eval.batch_size": 4}
    (first.dir / "figures").mkdir()
    (first.dir / "figures" / "roc.png").write_bytes(b"first")
    (first.dir / "only_first.png").write_bytes(b"x")
    written = first.save_results({"auroc": 0.5})
    assert written["evaluation"]["step"] == 10 and written["run"]["data"] == DATA
    assert json.loads((tmp_path / "results.json").read_text())["per_seed"]["0"]["auroc"] == 0.5
    assert (tmp_path / "figures" / "roc.png").read_bytes() == b"first"

    # the same evaluation config again: the same folder; another: a new one
    assert run.evaluation(run.eval_config(config()), step=10).dir == first.dir
    other_cfg = config()
    other_cfg.eval.layers = ("conv2",)
    second = run.evaluation(run.eval_config(other_cfg), step=10)
    assert second.dir != first.dir
    assert run.evaluation(run.eval_config(config()), step=11).dir != first.dir
    (second.dir / "figures").mkdir()
    (second.dir / "figures" / "roc.png").write_bytes(b"second")
    (tmp_path / "notes.txt").write_text("mine")
    (second.dir / "notes.txt").write_text("evaluation's")
    second.save_results({"auroc": 0.7})
    assert json.loads((tmp_path / "results.json").read_text())["per_seed"]["0"]["auroc"] == 0.7
    assert (tmp_path / "figures" / "roc.png").read_bytes() == b"second"
    assert not (tmp_path / "only_first.png").exists()  # the stale link is gone ...
    assert (first.dir / "only_first.png").read_bytes() == b"x"  # ... its file is not
    assert json.loads(first.results_path.read_text())["per_seed"]["0"]["auroc"] == 0.5
    assert (first.dir / "figures" / "roc.png").read_bytes() == b"first"
    assert (tmp_path / "notes.txt").read_text() == "mine"  # a real file is never replaced
    record = json.loads((tmp_path / "run.json").read_text())
    assert [e["dir"] for e in record["evaluations"]] == [first.dir.name, second.dir.name]
    assert os.readlink(tmp_path / "results.json") == os.path.join(
        "evaluations", second.dir.name, "results.json"
    )


def test_saved_results_only_for_this_checkpoint_seed_and_a_readable_file(tmp_path, caplog):
    run = start(tmp_path, config())
    # a step without checksums: never reused (its folder name cannot tell a retrained step)
    bare = run.evaluation(run.eval_config(config()), step=5)
    fake_checkpoint(tmp_path, 5)
    bare.save_results({"auroc": 0.5})
    assert bare.checkpoint is None and bare.saved_results(seed=0) is None

    step = tmp_path / "checkpoints" / "10"
    step.mkdir(parents=True)
    (step / wd.CHECKSUMS_FILE).write_text(json.dumps({"files": {"a": [1, "ff"]}}))
    ev = run.evaluation(run.eval_config(config()), step=10)
    assert ev.checkpoint is not None and ev.saved_results(seed=0) is None  # nothing written yet
    written = ev.save_results({"auroc": 0.6})
    again = run.evaluation(run.eval_config(config()), step=10)
    assert again.saved_results(seed=0) == written
    assert again.saved_results(seed=3) is None  # another seed's results
    # the file written for another checkpoint of this step (its header names that one)
    doc = json.loads(ev.results_path.read_text())
    header = doc["evaluation"]
    ev.results_path.write_text(
        json.dumps({**doc, "evaluation": {**header, "checkpoint": "0123456789"}})
    )
    assert again.saved_results(seed=0) is None
    ev.results_path.write_text(json.dumps({**doc, "evaluation": "odd"}))
    assert again.saved_results(seed=0) is None
    ev.results_path.write_text(json.dumps({k: v for k, v in doc.items() if k != "schema"}))
    with caplog.at_level("WARNING"):
        assert again.saved_results(seed=0) is None
    assert "evaluating again" in caplog.text
    # written by another commit: reused, with a warning naming it
    other = {"commit": "feedbee", "dirty": False}
    ev.results_path.write_text(json.dumps({**doc, "evaluation": {**header, "git": other}}))
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert again.saved_results(seed=0)["per_seed"]["0"]["auroc"] == 0.6
    assert "written by commit feedbee" in caplog.text


def test_write_json_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "a" / "x.json"
    wd.write_json_atomic(path, {"a": (1, 2), "p": pathlib.Path("/q")})
    assert json.loads(path.read_text()) == {"a": [1, 2], "p": "/q"}
    wd.write_json_atomic(path, {"b": 1})
    assert json.loads(path.read_text()) == {"b": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


# ----------------------------------------------------------------------------- validation


def test_validation_errors_name_the_field():
    c = ml_collections.ConfigDict(
        dict(digits=(1, 11), period=0, lr=-1.0, name="x", names=("a",), sub=dict(n=2.5))
    )
    with pytest.raises(v.ConfigError, match=r"^digits: MNIST digits are integers 0..9; got \[11\]"):
        v.digits(c, "digits")
    with pytest.raises(v.ConfigError, match="^period: must be an integer >= 1; got 0"):
        v.at_least(c, "period", 1)
    with pytest.raises(v.ConfigError, match="^lr: must be > 0; got -1.0"):
        v.positive(c, "lr")
    with pytest.raises(v.ConfigError, match="^sub.n: must be an integer; got 2.5"):
        v.at_least(c, "sub.n", 1)
    with pytest.raises(v.ConfigError, match=r"^names: unknown entries \['a'\]"):
        v.subset(c, "names", ("b",))
    with pytest.raises(v.ConfigError, match="^name: must be one of"):
        v.one_of(c, "name", ("y",))
    with pytest.raises(v.ConfigError, match="^missing: missing from the config"):
        v.get(c, "missing")
    with pytest.raises(FileNotFoundError, match="^data_dir: folder /nope does not exist"):
        v.existing_path("/nope", "data_dir")
    v.digits(ml_collections.ConfigDict(dict(d=(0, 9))), "d")
    v.at_least(c, "period", 0)


def test_model_layers_by_shape_only_trace():
    model = ConvVAE(input_shape=(16, 16, 1), channels=(4, 6), hidden=12, latent_dim=3)
    shapes = v.layers_of(model, (16, 16, 1))
    assert shapes["encoder/conv1"] == (1, 8, 8, 4) and shapes["encoder/conv2"] == (1, 4, 4, 6)
    v.model_layers(model, (16, 16, 1), ["conv2", "encoder/conv1"], "eval.layers")
    with pytest.raises(v.ConfigError, match=r"^eval.layers: ConvVAE.encode has no layer 'conv3'"):
        v.model_layers(model, (16, 16, 1), ["conv2", "conv3"], "eval.layers")
    with pytest.raises(v.ConfigError, match="^layer: layer 'fc1' outputs shape"):
        v.model_layers(model, (16, 16, 1), ["fc1"], "layer")
