"""One metric writer: JSON lines and TensorBoard event files, written by ``tensorboardX``.

:class:`MetricWriter` follows the shape of CLU's ``metric_writers.MetricWriter`` (the flax
convention: ``write_scalars(step, scalars)``, ``write_images(step, images)``, ``flush()``,
``close()``). CLU's TensorBoard writer imports TensorFlow; ``tensorboardX`` (numpy + protobuf)
writes the same files without it: its ``RecordWriter`` does the TFRecord framing (length,
masked CRC32C, payload, masked CRC32C) and its ``Event``/``Summary`` protos are the
messages (scalars as ``simple_value``, images as the encoded PNG, passed through unchanged).
``tensorboard --logdir=workdirs`` shows every workdir as a run (training curves) and each of
its evaluations as a sub-run (numbers and figures).

Why ``RecordWriter`` and the protos rather than ``tensorboardX.SummaryWriter``: the
``SummaryWriter`` queues events to a background thread (its ``flush()`` does not drain that
queue, so a flushed training curve may not be on disk yet), names files to the second with no
process id and opens them with ``"wb"`` (a second writer in the same folder and second
truncates the first's file), and rewrites tags it finds illegal. Here every call writes
synchronously, file names are ``events.out.tfevents.<time, µs>.<host>.<pid>`` (they sort in
the order written, which TensorBoard's purge below relies on) and tags are kept verbatim.

* Training (:func:`vae_xai.train.fit`): ``workdir/metrics.jsonl`` (one JSON object per log
  step) and ``workdir/events.out.tfevents.*``. A resumed run writes a new event file that
  starts with a ``SessionLog.START`` at the first step not kept (what ``SummaryWriter``'s
  ``purge_step`` writes), which tells TensorBoard to drop the points an interrupted run
  logged at and after it.
* Evaluations (:meth:`vae_xai.workdir.Evaluation.save_results`): every number in the
  results (tag = its ``/``-joined key path) and every PNG in the evaluation folder, at the
  evaluation's step, in the evaluation folder's own event file.

Only process 0 writes: the callers (``fit``, ``save_results``) open a writer there only.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import socket
import struct
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image
from tensorboardX import RecordWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

__all__ = ["MetricWriter", "flatten_numbers", "read_scalars"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def flatten_numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """Flatten the finite int/float leaves of a nested dict/list to ``/``-joined tags.

    Bools and strings are skipped.

    Args:
      tree: nested dicts and lists.
      prefix: prepended to every tag.

    Returns:
      ``{"a/b/0": value}``.
    """
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


def read_scalars(path: str | os.PathLike[str]) -> list[tuple[int, float, dict[str, float]]]:
    """The scalar events of one event file: ``(step, wall_time, {tag: value})`` in file order.

    Reads the TFRecord framing (8-byte length, 4-byte CRC, payload, 4-byte CRC; the CRCs are
    not checked) and parses each payload as an ``Event``. A record cut short at the end of
    the file (a process killed while writing) ends the list.

    Args:
      path: an ``events.out.tfevents.*`` file.

    Returns:
      One entry per event that holds scalar (``simple_value``) summaries.

    Raises:
      ValueError: a record that does not parse as an ``Event`` (names the file and offset).
    """
    data = pathlib.Path(path).read_bytes()
    out: list[tuple[int, float, dict[str, float]]] = []
    i = 0
    while i + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        if i + 12 + n + 4 > len(data):
            break  # cut short
        event = Event()
        try:
            event.ParseFromString(data[i + 12 : i + 12 + n])
        except Exception as err:  # protobuf's DecodeError
            raise ValueError(f"{path}: no TensorBoard event at byte {i} ({err})") from err
        i += 12 + n + 4
        values = {v.tag: v.simple_value for v in event.summary.value if v.HasField("simple_value")}
        if values:
            out.append((int(event.step), float(event.wall_time), values))
    return out


def _png_image(png: bytes) -> Summary.Image:
    """``Summary.Image`` holding ``png`` as it is; PIL reads only the header for the size."""
    if not png.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    with Image.open(io.BytesIO(png)) as image:
        width, height = image.size
        if image.mode == "P":  # palette: shown as RGB(A)
            channels = 4 if "transparency" in image.info else 3
        else:
            channels = len(image.getbands())
    return Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png)


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
        self._events = RecordWriter(os.fspath(self.event_path))
        self._jsonl = None if jsonl is None else pathlib.Path(jsonl).open("a")
        self._add(Event(step=0, file_version="brain.Event:2"))
        if resume_step is not None:
            self._add(Event(step=resume_step, session_log=SessionLog(status=SessionLog.START)))

    def _add(self, event: Event) -> None:
        event.wall_time = time.time()
        self._events.write(event.SerializeToString())

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Write scalars at ``step``: one JSON line (if ``jsonl``) and one event.

        Args:
          step: the step.
          scalars: ``{tag: number}`` (scalars or 0-d arrays), tags kept verbatim.
        """
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in values.items()])
        self._add(Event(step=int(step), summary=summary))

    def write_images(self, step: int, images: Mapping[str, bytes | os.PathLike[str]]) -> None:
        """Write images at ``step``, as they are (not decoded and re-encoded).

        Args:
          step: the step.
          images: ``{tag: PNG bytes or the path of a PNG file}``.

        Raises:
          ValueError: an image that is not a PNG.
        """
        for tag, image in images.items():
            png = image if isinstance(image, bytes) else pathlib.Path(image).read_bytes()
            summary = Summary(value=[Summary.Value(tag=tag, image=_png_image(png))])
            self._add(Event(step=int(step), summary=summary))

    def flush(self) -> None:
        """Flush the event file and the JSON lines to disk."""
        self._events.flush()
        if self._jsonl is not None:
            self._jsonl.flush()

    def close(self) -> None:
        """Flush and close both files."""
        self.flush()
        self._events.close()
        if self._jsonl is not None:
            self._jsonl.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
