"""The metric writer's TensorBoard event files, read back with the protobuf runtime (no
TensorFlow): framing and CRCs, scalars, images, and what fit and evaluations write."""

from __future__ import annotations

import json
import struct

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from PIL import Image

from vae_xai import metric_writer as mw
from vae_xai import train
from vae_xai import workdir as wd
from vae_xai.models import ConvVAE


def _event_class():
    """``tensorflow.Event`` (the fields we write), declared independently of the writer."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="tb_test.proto", package="tbtest")
    fdp.syntax = "proto3"

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for field_name, number, kind, *rest in fields:
            field = m.field.add(name=field_name, number=number, type=kind)
            field.label = f.LABEL_REPEATED if "repeated" in rest else f.LABEL_OPTIONAL
            if kind == f.TYPE_MESSAGE:
                field.type_name = f".tbtest.{rest[0]}"

    message(
        "Image",
        [
            ("height", 1, f.TYPE_INT32),
            ("width", 2, f.TYPE_INT32),
            ("colorspace", 3, f.TYPE_INT32),
            ("encoded_image_string", 4, f.TYPE_BYTES),
        ],
    )
    message(
        "Value",
        [
            ("tag", 1, f.TYPE_STRING),
            ("simple_value", 2, f.TYPE_FLOAT),
            ("image", 4, f.TYPE_MESSAGE, "Image"),
        ],
    )
    message("Summary", [("value", 1, f.TYPE_MESSAGE, "Value", "repeated")])
    message("SessionLog", [("status", 1, f.TYPE_INT32), ("msg", 3, f.TYPE_STRING)])
    message("Event", [("wall_time", 1, f.TYPE_DOUBLE), ("step", 2, f.TYPE_INT64),
                      ("file_version", 3, f.TYPE_STRING), ("summary", 5, f.TYPE_MESSAGE, "Summary"),
                      ("session_log", 6, f.TYPE_MESSAGE, "SessionLog")])  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tbtest.Event"))


Event = _event_class()


def _masked(data: bytes) -> int:
    crc = mw.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path):
    """TFRecord framing: uint64 length, masked crc32c(length), payload, masked crc32c."""
    raw, events, i = path.read_bytes(), [], 0
    while i < len(raw):
        header = raw[i : i + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", raw[i + 8 : i + 12])[0] == _masked(header)
        data = raw[i + 12 : i + 12 + length]
        assert struct.unpack("<I", raw[i + 12 + length : i + 16 + length])[0] == _masked(data)
        event = Event()
        event.ParseFromString(data)
        events.append(event)
        i += 16 + length
    return events


def scalars(events):
    return {
        (e.step, v.tag): v.simple_value
        for e in events
        for v in e.summary.value
        if not v.image.width
    }


def test_crc32c_known_vector():
    assert mw.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert mw.crc32c(b"") == 0


def test_scalars_images_and_jsonl_read_back(tmp_path):
    png_path = tmp_path / "fig.png"
    Image.fromarray(np.zeros((5, 7, 3), np.uint8)).save(png_path)
    with mw.MetricWriter(tmp_path / "tb", jsonl=tmp_path / "m.jsonl", resume_step=3) as w:
        w.write_scalars(4, {"loss": 1.5, "kl": np.float32(0.25)})
        w.write_scalars(-1, {"neg": -2})
        w.write_images(4, {"figs/fig": png_path})
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    events = read_events(path)
    assert events[0].file_version == "brain.Event:2"
    assert events[1].step == 3 and events[1].session_log.status == 1  # START
    assert scalars(events) == {(4, "loss"): 1.5, (4, "kl"): 0.25, (-1, "neg"): -2.0}
    (image,) = [v.image for e in events for v in e.summary.value if v.image.width]
    assert (image.width, image.height, image.colorspace) == (7, 5, 3)
    assert image.encoded_image_string == png_path.read_bytes()
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert lines == [{"step": 4, "loss": 1.5, "kl": 0.25}, {"step": -1, "neg": -2.0}]


def test_flatten_numbers():
    tree = {"a": {"b": 1, "c": [0.5, None, "x", True]}, "d": float("nan"), "e": np.int64(3)}
    assert mw.flatten_numbers(tree) == {"a/b": 1.0, "a/c/0": 0.5, "e": 3.0}
    with pytest.raises(ValueError, match="not a PNG"):
        mw.png_size(b"GIF89a" + bytes(30))


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
    (path,) = tmp_path.glob("events.out.tfevents.*")
    got = scalars(read_events(path))
    want = {(r["step"], k): v for r in logged for k, v in r.items() if k != "step"}
    assert set(got) == set(want) == {(s, k) for s in (2, 4) for k in ("loss", "recon", "kl")}
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6)  # float32 in the event file


def test_evaluation_writes_its_numbers_and_figures(tmp_path):
    c = ml_collections.ConfigDict(dict(num_steps=3, eval=dict(k=1)))
    run = wd.start(tmp_path, c, experiment="e", fields=wd.Fields(), data={"d": 1})
    evaluation = run.evaluation(run.eval_config(c), step=3)
    (evaluation.dir / "figures").mkdir()
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(evaluation.dir / "figures" / "roc.png")
    evaluation.save_results({"metrics": {"recon": {"auroc": 0.75}}, "name": "x"})
    evaluation.save_results({"metrics": {"recon": {"auroc": 0.5}}})  # rewritten, not appended
    (path,) = evaluation.dir.glob("events.out.tfevents.*")
    events = read_events(path)
    assert scalars(events) == {(3, "metrics/recon/auroc"): 0.5}
    (image,) = [(e.step, v.tag, v.image) for e in events for v in e.summary.value if v.image.width]
    assert image[:2] == (3, "figures/roc.png") and (image[2].width, image[2].height) == (6, 4)
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # event files are not linked
