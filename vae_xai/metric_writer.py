"""One metric writer: JSON lines and TensorBoard event files, with no TensorFlow.

:class:`MetricWriter` follows the shape of CLU's ``metric_writers.MetricWriter`` (the flax
convention: ``write_scalars(step, scalars)``, ``write_images(step, images)``, ``flush()``,
``close()``), but CLU's TensorBoard writer imports TensorFlow (``clu.metric_writers`` imports
``tensorflow`` and ``tensorboard`` when imported) and its alternative needs PyTorch;
``tensorboardX`` (numpy + protobuf) would do but is not a dependency of this project. The
event file format is small and stable, so it is written here directly: TFRecord framing
(length, masked CRC32C, payload, masked CRC32C) around ``tensorflow.Event`` protos encoded by
hand (scalars as ``simple_value``, images as encoded PNG). ``tensorboard --logdir=workdirs``
shows every workdir as a run (training curves) and each of its evaluations as a sub-run
(numbers and figures).

* Training (:func:`vae_xai.train.fit`): ``workdir/metrics.jsonl`` (one JSON object per log
  step, as before) and ``workdir/events.out.tfevents.*``. A resumed run writes a new event
  file that starts with a ``SessionLog.START`` just after the restored step, which tells
  TensorBoard to drop the points an interrupted run logged after it.
* Evaluations (:meth:`vae_xai.workdir.Evaluation.save_results`): every number in the
  results (tag = its ``/``-joined key path) and every PNG in the evaluation folder, at the
  evaluation's step, in the evaluation folder's own event file.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["MetricWriter", "crc32c", "flatten_numbers", "png_size"]


# ----------------------------------------------------------------------------- encoding


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord framing uses (``crc32c(b"123456789") == 0xE3069283``)."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 wire encoding (two's complement for negatives)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _event(step: int, *, summary: bytes | None = None, **other: bytes) -> bytes:
    """``tensorflow.Event``: wall_time=1 (double), step=2 (int64), file_version=3,
    summary=5, session_log=6."""
    out = _key(1, 1) + struct.pack("<d", time.time()) + _key(2, 0) + _varint(int(step))
    if "file_version" in other:
        out += _bytes_field(3, other["file_version"])
    if summary is not None:
        out += _bytes_field(5, summary)
    if "session_log" in other:
        out += _bytes_field(6, other["session_log"])
    return out


def _scalar_value(tag: str, value: float) -> bytes:
    """``Summary.Value``: tag=1, simple_value=2 (float)."""
    return _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value))


def _image_value(tag: str, png: bytes) -> bytes:
    """``Summary.Value`` with image=4: ``Summary.Image`` height=1, width=2, colorspace=3,
    encoded_image_string=4."""
    width, height, channels = png_size(png)
    image = (
        _key(1, 0) + _varint(height) + _key(2, 0) + _varint(width)
        + _key(3, 0) + _varint(channels) + _bytes_field(4, png)
    )  # fmt: skip
    return _bytes_field(1, tag.encode()) + _bytes_field(4, image)


def png_size(png: bytes) -> tuple[int, int, int]:
    """``(width, height, channels)`` from a PNG's IHDR chunk (no decoding)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG file")
    width, height = struct.unpack(">II", png[16:24])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(png[25], 3)
    return width, height, channels


def flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Every finite int/float leaf of a nested dict/list as ``{"a/b/0": value}`` (bools and
    strings skipped)."""
    out: dict[str, float] = {}
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        if isinstance(tree, int | float | np.number) and not isinstance(tree, bool):
            if np.isfinite(float(tree)):
                out[prefix.rstrip("/")] = float(tree)
        return out
    for key, value in items:
        out.update(flatten_numbers(value, f"{prefix}{key}/"))
    return out


# ----------------------------------------------------------------------------- writer


class MetricWriter:
    """Scalars to JSON lines and TensorBoard events; images to TensorBoard.

    Args:
      logdir: the folder of the event file (a TensorBoard run).
      jsonl: a JSON-lines file for scalars (``{"step": ..., **scalars}`` per call), or None.
      resume_step: when continuing a run, the first step not kept: the new event file starts
        with ``SessionLog.START`` at it, so TensorBoard purges the old files' points at and
        after it.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        *,
        jsonl: str | os.PathLike[str] | None = None,
        resume_step: int | None = None,
    ):
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self.event_path = self.logdir / name
        self._events = self.event_path.open("ab")
        self._jsonl = None if jsonl is None else pathlib.Path(jsonl).open("a")
        self._record(_event(0, file_version=b"brain.Event:2"))
        if resume_step is not None:
            self._record(_event(resume_step, session_log=_key(1, 0) + _varint(1)))  # START

    def _record(self, data: bytes) -> None:
        header = struct.pack("<Q", len(data))
        self._events.write(
            header
            + struct.pack("<I", _masked_crc(header))
            + data
            + struct.pack("<I", _masked_crc(data))
        )

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        summary = b"".join(_bytes_field(1, _scalar_value(k, v)) for k, v in values.items())
        self._record(_event(step, summary=summary))

    def write_images(self, step: int, images: Mapping[str, bytes | os.PathLike[str]]) -> None:
        """``images``: tag -> PNG bytes or the path of a PNG file."""
        for tag, image in images.items():
            png = image if isinstance(image, bytes) else pathlib.Path(image).read_bytes()
            self._record(_event(step, summary=_bytes_field(1, _image_value(tag, png))))

    def flush(self) -> None:
        self._events.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        self.flush()
        self._events.close()
        if self._jsonl is not None:
            self._jsonl.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
