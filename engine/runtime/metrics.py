"""Metrics on rank 0: the rows of a stage (metrics.jsonl), TensorBoard event files, a console progress line.

A stage's rows form one timeline. On a local disk they are appended to `{stage}/metrics.jsonl`, one row per
write. Object stores cannot append, so there they go to numbered parts, `{stage}/metrics/part-00000.jsonl`,
`part-00001.jsonl`, ...: rows are buffered and a part is written once it holds `SEGMENT_ROWS` rows or its
oldest row is `SEGMENT_SECS` seconds old (checked as rows arrive), at `close()`, and at exit; a kill -9 loses
the buffered rows. Either way a log step costs O(1) writes. `read_metrics(stage_url)` returns the rows of
either layout.

A stage that resumes from the checkpoint of step s first drops the rows with step > s (train and evaluation
rows of a timeline that the resume abandoned), each file replaced whole and atomically (a temporary file and a
rename on local disks, one write of the object on stores), so a crash during it loses nothing that is kept.
TensorBoard files cannot be cut: the writer is opened with `purge_step=s + 1`, a marker that makes
TensorBoard discard the events of earlier files from step s + 1 on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
import time
import weakref
import zlib
from typing import Any

import fsspec
import numpy as np

from .checkpoint import is_local

log = logging.getLogger("engine")

ROWS = "metrics.jsonl"  # local disks: one file, appended to
SEGMENTS = "metrics"  # object stores: a folder of numbered parts
SEGMENT_ROWS = 500  # a part is written once it holds this many rows...
SEGMENT_SECS = 120.0  # ...or its oldest row is this old
_PART = re.compile(r"part-(\d+)\.jsonl$")


def _part_files(fs: fsspec.AbstractFileSystem, root: str) -> list[tuple[int, str]]:
    """The (number, path) of a stage's metric parts, in order."""
    folder = f"{root}/{SEGMENTS}"
    if not fs.isdir(folder):
        return []
    found = ((_PART.search(p), p) for p in fs.ls(folder, detail=False))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def _row_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    """The files holding a stage's rows, in the order written: metrics.jsonl, then the parts by number."""
    single = [f"{root}/{ROWS}"] if fs.isfile(f"{root}/{ROWS}") else []
    return single + [p for _, p in _part_files(fs, root)]


def _parse(text: str) -> list[dict[str, Any]]:
    """The rows of a file's text; a line that is not a JSON object (cut by a crash mid-write) is skipped."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def read_metrics(stage_url: str) -> list[dict[str, Any]]:
    """The rows a stage logged, in the order written, from whichever layout holds them (module docstring)."""
    fs, root = fsspec.core.url_to_fs(stage_url.rstrip("/"))
    return [row for path in _row_files(fs, root) for row in _parse(fs.cat_file(path).decode())]


def _replace(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace a file whole: on a local disk a temporary file renamed over it, elsewhere one write."""
    if "file" in fs.protocol:
        with open(f"{path}.tmp", "wb") as f:
            f.write(data)
        os.replace(f"{path}.tmp", path)
    else:
        fs.pipe_file(path, data)


def truncate_metrics(stage_url: str, step: int) -> int:
    """Drop the rows with step > `step` from a stage's files (see the module docstring); return how many.

    Files are read from the newest back and the first one whose rows all stay ends the scan: rows are written
    in step order, so the files before it hold earlier steps only.
    """
    fs, root = fsspec.core.url_to_fs(stage_url.rstrip("/"))
    dropped = 0
    for path in reversed(_row_files(fs, root)):
        text = fs.cat_file(path).decode()
        rows = _parse(text)
        kept = "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step)
        if kept == text:
            break
        dropped += sum(r["step"] > step for r in rows)
        if kept:
            _replace(fs, path, kept.encode())
        else:
            fs.rm(path)
    return dropped


class _Segments:
    """Rows bound for an object store, buffered and written as numbered parts (objects cannot be appended)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str):
        self.fs, self.folder = fs, f"{root}/{SEGMENTS}"
        parts = _part_files(fs, root)
        self.next = parts[-1][0] + 1 if parts else 0
        self.rows, self.secs = SEGMENT_ROWS, SEGMENT_SECS
        self.buffer: list[str] = []
        self.since = 0.0  # when the oldest buffered row came

    def add(self, line: str) -> None:
        """Buffer a row; write the part when it is full or old enough."""
        if not self.buffer:
            self.since = time.monotonic()
        self.buffer.append(line)
        if len(self.buffer) >= self.rows or time.monotonic() - self.since >= self.secs:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as the next part."""
        if self.buffer:
            self.fs.pipe_file(f"{self.folder}/part-{self.next:05d}.jsonl", "".join(self.buffer).encode())
            self.next += 1
            self.buffer = []


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def png(image: np.ndarray) -> bytes:
    """PNG bytes of an HWC uint8 image with 1 (grey) or 3 (RGB) channels (zlib only, no imaging library)."""
    h, w, c = image.shape
    rows = np.concatenate(
        [np.zeros((h, 1), np.uint8), image.reshape(h, w * c)], axis=1
    )  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes()))
        + chunk(b"IEND", b"")
    )


class Metrics:
    """Writes one JSON row per logged step (and evaluation) and TensorBoard scalars; does nothing off rank 0.

    `start` is the step the stage resumed from (0 for a fresh start): rows past it are dropped first.
    """

    def __init__(
        self,
        stage_url: str,
        enabled: bool,
        tensorboard: bool,
        console: bool,
        stage: str,
        steps: int,
        start: int = 0,
    ):
        self.enabled, self.console, self.stage, self.steps = enabled, console, stage, steps
        self.url = f"{stage_url.rstrip('/')}/{ROWS}"
        self.tb = None
        self._segments: _Segments | None = None
        if enabled:
            fs, path = fsspec.core.url_to_fs(stage_url.rstrip("/"))
            fs.makedirs(path, exist_ok=True)
            dropped = truncate_metrics(stage_url, start)
            if dropped:
                log.info("%s: dropped %d metric rows logged after step %d", stage, dropped, start)
            local = is_local(stage_url)
            if not local:
                self._segments = _Segments(fs, path)
                self._flush_at_exit = weakref.finalize(self, self._segments.flush)
            if tensorboard and local:
                from tensorboardX import SummaryWriter

                # An earlier attempt's events past `start` belong to the abandoned timeline: hide them.
                purge = start + 1 if fs.exists(f"{path}/tb") else None
                # Event file names hold the time in whole seconds: a suffix keeps a quick rerun from
                # truncating the previous attempt's file of the same second.
                suffix = f".{os.getpid()}.{start}"
                self.tb = SummaryWriter(
                    logdir=f"{path}/tb", flush_secs=30, purge_step=purge, filename_suffix=suffix
                )
            elif tensorboard:
                log.info(
                    "TensorBoard event files are written for local outputs only; %s is remote", stage_url
                )

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record the metrics of `step` (a mapping of names to numbers)."""
        if not self.enabled:
            return
        row = {
            "step": step,
            **{k: (float(v) if isinstance(v, int | float) else v) for k, v in values.items()},
        }
        line = json.dumps(row) + "\n"
        if self._segments is None:
            with fsspec.open(self.url, "a") as f:
                f.write(line)
        else:
            self._segments.add(line)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(k.replace("@", "_at_"), v, step)  # TensorBoard refuses "@"

    def text(self, tag: str, text: str, step: int) -> None:
        """A text sample in TensorBoard (e.g. a rendered example)."""
        if self.tb is not None:
            self.tb.add_text(tag, f"```\n{text}\n```", step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An HWC uint8 image (1 or 3 channels) in TensorBoard."""
        if self.tb is not None:
            from tensorboardX.proto.summary_pb2 import Summary

            h, w, c = image.shape
            img = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=png(image))
            self.tb._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), step)

    def progress(self, step: int, values: dict[str, float], eta_s: float) -> None:
        """One console line: step, loss, learning rate, throughput and ETA."""
        if not (self.enabled and self.console):
            return
        baseline = values.get("loss/mean_baseline")
        # RL steps: what was sampled matters more than the loss
        rl = "".join(f"  {k} {values[k]:.3f}" for k in ("reward", "pass_rate", "kl") if k in values)
        log.info(
            "%s  step %d/%d  loss %.4f%s%s  lr %.2e  gnorm %.3f  %s tok/s  %s ex/s  eta %s",
            self.stage,
            step,
            self.steps,
            values["loss"],
            "" if baseline is None else f" (mean predictor {baseline:.4f})",
            rl,
            values["lr"],
            values.get("grad_norm", float("nan")),
            _si(values["tokens_per_s"]),
            _si(values["examples_per_s"]),
            _duration(eta_s),
        )

    def close(self) -> None:
        """Write the buffered rows, flush and close the event files."""
        if self._segments is not None:
            self._flush_at_exit()
        if self.tb is not None:
            self.tb.close()
