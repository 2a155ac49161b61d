"""The metric writer's TensorBoard event files, read back with TensorBoard's own reader
(``tensorboard``'s ``EventAccumulator`` and event file loader, which check the framing CRCs and
apply the restart purge): scalars, images, resume, and what fit and evaluations write."""

from __future__ import annotations

import io
import json
import re
import struct

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator, event_file_loader

from vae_xai import metric_writer as mw
from vae_xai import train
from vae_xai import workdir as wd
from vae_xai.models import ConvVAE


def accumulate(path):
    """What TensorBoard shows for a run folder (every point kept: no reservoir sampling)."""
    keep_all = {event_accumulator.SCALARS: 0, event_accumulator.IMAGES: 0}
    return event_accumulator.EventAccumulator(str(path), size_guidance=keep_all).Reload()


def scalars(acc):
    return {(e.step, tag): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def images(acc):
    return {
        (e.step, tag): (e.width, e.height, e.encoded_image_string)
        for tag in acc.Tags()["images"]
        for e in acc.Images(tag)
    }


def raw_events(path):
    return list(event_file_loader.LegacyEventFileLoader(str(path)).Load())


def png(shape, value=0):
    buffer = io.BytesIO()
    Image.fromarray(np.full(shape, value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_scalars_images_and_jsonl_read_back(tmp_path):
    png_path = tmp_path / "fig.png"
    png_path.write_bytes(png((5, 7, 3)))
    gray = png((4, 6), 9)
    with mw.MetricWriter(tmp_path / "tb", jsonl=tmp_path / "m.jsonl") as w:
        w.write_scalars(4, {"loss": 1.5, "kl": np.float32(0.25), "odd tag (x)": 3})
        w.write_scalars(-1, {"neg": -2})
        w.write_images(4, {"figs/fig": png_path, "figs/gray.png": gray})
        with pytest.raises(ValueError, match="not a PNG"):
            w.write_images(4, {"gif": b"GIF89a" + bytes(30)})
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    assert re.fullmatch(r"events\.out\.tfevents\.\d+\.\d{6}\..+\.\d+", path.name)
    first, *_ = raw_events(path)
    assert first.file_version == "brain.Event:2"
    acc = accumulate(tmp_path / "tb")
    assert scalars(acc) == {
        (4, "loss"): 1.5,
        (4, "kl"): 0.25,
        (4, "odd tag (x)"): 3.0,  # tags are written verbatim
        (-1, "neg"): -2.0,
    }
    assert images(acc) == {
        (4, "figs/fig"): (7, 5, png_path.read_bytes()),  # the PNG bytes as they were
        (4, "figs/gray.png"): (6, 4, gray),
    }
    colorspaces = [v.image.colorspace for e in raw_events(path) for v in e.summary.value]
    assert [c for c in colorspaces if c] == [3, 1]
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines == [
        {"step": 4, "loss": 1.5, "kl": 0.25, "odd tag (x)": 3.0},
        {"step": -1, "neg": -2.0},
    ]


def test_resume_step_purges_the_interrupted_runs_later_points(tmp_path):
    """An interrupted run logged steps 1..6 (and an image at 5); it resumes from a checkpoint
    at step 3, so the new file starts with SessionLog.START at 4 and TensorBoard shows steps
    1..3 of the old file and 4.. of the new one."""
    with mw.MetricWriter(tmp_path, jsonl=tmp_path / "m.jsonl") as w:
        for step in range(1, 7):
            w.write_scalars(step, {"loss": float(step)})
        w.write_images(2, {"fig": png((2, 2))})
        w.write_images(5, {"fig": png((3, 3))})
    with mw.MetricWriter(tmp_path, jsonl=tmp_path / "m.jsonl", resume_step=4) as w:
        for step in range(4, 9):
            w.write_scalars(step, {"loss": 10.0 * step})
        w.write_images(6, {"fig": png((4, 4))})
    old, new = sorted(tmp_path.glob("events.out.tfevents.*"))  # names sort in written order
    start = raw_events(new)[1]
    assert (start.step, start.session_log.status) == (4, start.session_log.START)
    acc = accumulate(tmp_path)
    assert scalars(acc) == {
        **{(s, "loss"): float(s) for s in (1, 2, 3)},
        **{(s, "loss"): 10.0 * s for s in range(4, 9)},
    }
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 9))  # none twice
    assert sorted(step for step, _ in images(acc)) == [2, 6]
    assert scalars(accumulate(old))[(5, "loss")] == 5.0  # the old file itself is untouched
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert len(lines) == 6 + 5  # JSON lines are appended, as before


def test_flush_puts_the_points_on_disk(tmp_path):
    w = mw.MetricWriter(tmp_path, jsonl=tmp_path / "m.jsonl")
    w.write_scalars(1, {"loss": 0.5})
    w.flush()
    assert scalars(accumulate(tmp_path)) == {(1, "loss"): 0.5}
    assert json.loads((tmp_path / "m.jsonl").read_text()) == {"step": 1, "loss": 0.5}
    w.close()


def test_flatten_numbers():
    tree = {"a": {"b": 1, "c": [0.5, None, "x", True]}, "d": float("nan"), "e": np.int64(3)}
    assert mw.flatten_numbers(tree) == {"a/b": 1.0, "a/c/0": 0.5, "e": 3.0}


def test_fit_writes_training_curves(tmp_path):
    model = ConvVAE(input_shape=(8, 8, 1), channels=(4,), hidden=8, latent_dim=3)
    opt = optax.adam(1e-2)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    data = np.random.default_rng(0).uniform(size=(8, 8, 8, 1)).astype(np.float32)
    train.fit(
        train.create_state(params, opt),
        train.vae_update_fn(model, opt),
        lambda step: {"image": data},
        workdir=tmp_path,
        num_steps=4,
        checkpoint_every=4,
        log_every=2,
        progress=False,
    )
    logged = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    (_,) = tmp_path.glob("events.out.tfevents.*")
    got = scalars(accumulate(tmp_path))
    want = {(r["step"], k): v for r in logged for k, v in r.items() if k != "step"}
    assert set(got) == set(want) == {(s, k) for s in (2, 4) for k in ("loss", "recon", "kl")}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6)  # float32 in the event file


def test_evaluation_writes_its_numbers_and_figures(tmp_path):
    c = ml_collections.ConfigDict(dict(num_steps=3, eval=dict(k=1)))
    run = wd.start(tmp_path, c, experiment="e", fields=wd.Fields(), data={"d": 1})
    evaluation = run.evaluation(run.eval_config(c), step=3)
    (evaluation.dir / "figures").mkdir()
    roc = png((4, 6))
    (evaluation.dir / "figures" / "roc.png").write_bytes(roc)
    evaluation.save_results({"metrics": {"recon": {"auroc": 0.75}}, "name": "x"})
    evaluation.save_results({"metrics": {"recon": {"auroc": 0.5}}})  # rewritten, not appended
    (_,) = evaluation.dir.glob("events.out.tfevents.*")
    acc = accumulate(evaluation.dir)
    assert scalars(acc) == {(3, "metrics/recon/auroc"): 0.5}
    assert images(acc) == {(3, "figures/roc.png"): (6, 4, roc)}
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # event files are not linked


def test_read_scalars_matches_tensorboards_reader(tmp_path):
    with mw.MetricWriter(tmp_path) as w:
        for step in (10, 20, 30):
            w.write_scalars(step, {"loss": step / 10, "kl": -step})
        w.write_images(30, {"fig.png": png((3, 4, 3))})
    path = next(tmp_path.glob("events.out.tfevents.*"))
    got = mw.read_scalars(path)
    reference = [
        (e.step, e.wall_time, {v.tag: v.simple_value for v in e.summary.value})
        for e in raw_events(path)
        if any(v.HasField("simple_value") for v in e.summary.value)
    ]
    assert got == reference and [g[0] for g in got] == [10, 20, 30]
    assert got[1][2] == {"loss": 2.0, "kl": -20.0}
    # a record cut short by a killed process ends the list; a foreign file is named
    with mw.MetricWriter(tmp_path / "scalars") as w:
        for step in (10, 20, 30):
            w.write_scalars(step, {"loss": step / 10})
    data = next((tmp_path / "scalars").glob("events.out.tfevents.*")).read_bytes()
    (tmp_path / "cut").write_bytes(data[:-7])
    assert [g[0] for g in mw.read_scalars(tmp_path / "cut")] == [10, 20]
    (tmp_path / "bad").write_bytes(struct.pack("<Q", 3) + b"\0" * 4 + b"\xff\xff\xff" + b"\0" * 4)
    with pytest.raises(ValueError, match="no TensorBoard event at byte 0"):
        mw.read_scalars(tmp_path / "bad")
