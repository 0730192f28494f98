"""Metrics on rank 0: metrics.jsonl, TensorBoard event files, and a concise console progress line."""

from __future__ import annotations

import json
import logging
import math
import struct
import zlib
from typing import Any

import fsspec
import numpy as np

from .checkpoint import is_local

log = logging.getLogger("engine")


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
    """Writes one JSON line per logged step and TensorBoard scalars; does nothing off rank 0."""

    def __init__(
        self, stage_url: str, enabled: bool, tensorboard: bool, console: bool, stage: str, steps: int
    ):
        self.enabled, self.console, self.stage, self.steps = enabled, console, stage, steps
        self.url = f"{stage_url}/metrics.jsonl"
        self._lines: list[str] = []
        self.tb = None
        if enabled:
            fs, path = fsspec.core.url_to_fs(stage_url)
            fs.makedirs(path, exist_ok=True)
            if tensorboard and is_local(stage_url):
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(logdir=f"{path}/tb", flush_secs=30)
            elif tensorboard:
                log.info(
                    "TensorBoard event files are written for local outputs only; %s is remote", stage_url
                )
            if fs.exists(f"{path}/metrics.jsonl") and not is_local(stage_url):
                with fs.open(f"{path}/metrics.jsonl", "r") as f:
                    self._lines = f.read().splitlines(keepends=True)

    def write(self, step: int, values: dict[str, Any]) -> None:
        """Record the metrics of `step` (a mapping of names to numbers)."""
        if not self.enabled:
            return
        row = {
            "step": step,
            **{k: (float(v) if isinstance(v, int | float) else v) for k, v in values.items()},
        }
        line = json.dumps(row) + "\n"
        if is_local(self.url):
            with fsspec.open(self.url, "a") as f:
                f.write(line)
        else:  # object stores cannot append: rewrite the whole (small) file
            self._lines.append(line)
            with fsspec.open(self.url, "w") as f:
                f.writelines(self._lines)
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(k, v, step)

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
        log.info(
            "%s  step %d/%d  loss %.4f%s  lr %.2e  gnorm %.3f  %s tok/s  %s ex/s  eta %s",
            self.stage,
            step,
            self.steps,
            values["loss"],
            "" if baseline is None else f" (mean predictor {baseline:.4f})",
            values["lr"],
            values.get("grad_norm", float("nan")),
            _si(values["tokens_per_s"]),
            _si(values["examples_per_s"]),
            _duration(eta_s),
        )

    def close(self) -> None:
        """Flush and close the event files."""
        if self.tb is not None:
            self.tb.close()
