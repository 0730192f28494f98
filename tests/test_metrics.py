"""Metric rows: one timeline after a resume from an older checkpoint, O(1) writes per row on object stores."""

from __future__ import annotations

import gc
import json
import struct
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from helpers import SPEC, TINY

import engine.runtime.metrics as metrics_module
from engine.runtime.distributed import Dist
from engine.runtime.metrics import Metrics, read_metrics, truncate_metrics
from engine.runtime.trainer import run_spec
from schemas import load_spec

TIMING = {"tokens_per_s", "examples_per_s", "step_time_s"}  # wall-clock figures: differ between runs


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without their wall-clock figures."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def run(out: str) -> list[dict[str, Any]]:
    """20 steps of the tiny spec, checkpoints every 5 (the last 3 kept: 10, 15, 20), a row every 5, an evaluation
    every 10."""
    spec = load_spec(
        SPEC,
        [
            f"run.output={out}",
            *TINY,
            "stages.train.schedule.steps=20",
            "stages.train.checkpoint.every=5",
            "stages.train.checkpoint.keep_last=3",
            "stages.train.logging.every=5",
            "stages.train.evals.0.every=10",
        ],
    )
    run_spec(spec, Dist())
    return read_metrics(f"{out}/train")


def events(path: Path) -> list[Any]:
    """The Event protos of a TensorBoard event file (TFRecord framing: length, its CRC, data, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        out.append(Event.FromString(data[i + 12 : i + 12 + n]))
        i += 12 + n + 4
    return out


@pytest.mark.slow
def test_resume_from_an_older_checkpoint_keeps_one_timeline(tmp_path, monkeypatch, caplog):
    """Run 20 steps, delete final/ and the step-15 and step-20 checkpoints, rerun: it resumes from 10 and the rows (train
    and evaluation) are those of the uninterrupted run, once each, in both layouts."""
    monkeypatch.setattr(metrics_module, "SEGMENT_ROWS", 2)  # several parts: the cut falls inside one
    layouts = {}
    for out in (str(tmp_path), "memory://metrics-resume"):
        first = run(out)
        fs, root = fsspec.core.url_to_fs(out)
        fs.rm(f"{root}/train/final", recursive=True)
        fs.rm(f"{root}/train/checkpoints/step-00000015", recursive=True)
        fs.rm(f"{root}/train/checkpoints/step-00000020", recursive=True)
        caplog.clear()
        with caplog.at_level("INFO", logger="engine"):
            again = run(out)
        assert (
            "resumed from step 10" in caplog.text
            and "dropped 3 metric rows logged after step 10" in caplog.text
        )
        train = [r["step"] for r in again if "loss" in r]
        evals = [r["step"] for r in again if "acc/train" in r]
        assert train == [5, 10, 15, 20] and evals == [10, 20]
        assert comparable(again) == comparable(first)  # the replayed steps log what they logged before
        layouts[out] = again
    local, remote = layouts.values()
    assert comparable(local) == comparable(remote)
    # parts of 2 rows: [5, 10] [e10, 15] [20, e20]; the resume cut [e10, 15] to [e10] and dropped [20, e20],
    # then wrote [15, 20] and, at close, [e20]
    memory = fsspec.filesystem("memory")
    parts = sorted(memory.ls("/metrics-resume/train/metrics", detail=False))
    assert [p.rsplit("/", 1)[1] for p in parts] == [f"part-{i:05d}.jsonl" for i in range(4)]
    assert [[r["step"] for r in map(json.loads, memory.cat(p).splitlines())] for p in parts] == [
        [5, 10],
        [10],
        [15, 20],
        [20],
    ]
    # TensorBoard: the resumed writer's file starts with the marker that hides the old events from step 11
    files = sorted((tmp_path / "train" / "tb").glob("events.out.tfevents.*"))
    assert len(files) == 2
    starts = [e for e in events(files[1]) if e.HasField("session_log")]
    assert [(e.session_log.status, e.step) for e in starts] == [(starts[0].session_log.START, 11)]
    assert not any(e.HasField("session_log") for e in events(files[0]))


class CountingStore(dict):
    """The memory filesystem's store, recording the bytes of every file written."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, int]] = []

    def __setitem__(self, path: str, file: Any) -> None:
        self.writes.append((path, file.getbuffer().nbytes))
        super().__setitem__(path, file)


def test_object_store_rows_cost_constant_writes(monkeypatch):
    """On an object store each row is written once, in parts of SEGMENT_ROWS rows: the bytes written per row
    do not grow with the rows before it (rewriting the whole file at every row made them quadratic)."""
    store = CountingStore()
    monkeypatch.setattr(MemoryFileSystem, "store", store)
    monkeypatch.setattr(metrics_module, "SEGMENT_ROWS", 10)
    metrics = Metrics("memory://counted/train", True, False, False, "train", 1000)
    rows = [{"loss": 1.0 / (i + 1), "lr": 3e-4, "tokens": 1000.0 * i} for i in range(205)]
    sizes = []
    for i, values in enumerate(rows):
        before = sum(n for _, n in store.writes)
        metrics.write(10 * (i + 1), values)
        sizes.append(sum(n for _, n in store.writes) - before)
    metrics.close()
    lines = [json.dumps({"step": 10 * (i + 1), **v}) + "\n" for i, v in enumerate(rows)]
    assert sum(n for _, n in store.writes) == sum(len(line) for line in lines)  # every row written once
    assert max(sizes) <= 10 * max(len(line) for line in lines)  # at most one part per row
    assert sum(s > 0 for s in sizes) == 20  # 20 full parts while writing, the 5 left at close
    assert len({p for p, _ in store.writes}) == 21
    assert read_metrics("memory://counted/train") == [json.loads(line) for line in lines]


def test_buffered_rows_are_written_when_metrics_is_dropped(monkeypatch):
    """A stage that dies by an exception never calls close(): its buffered rows are written when the object
    goes (or at exit)."""
    monkeypatch.setattr(metrics_module, "SEGMENT_ROWS", 10)
    metrics = Metrics("memory://dropped/train", True, False, False, "train", 100)
    for step in (10, 20, 30):
        metrics.write(step, {"loss": 0.5})
    assert read_metrics("memory://dropped/train") == []
    del metrics
    gc.collect()
    assert [r["step"] for r in read_metrics("memory://dropped/train")] == [10, 20, 30]


def test_truncation_replaces_the_file_atomically(tmp_path, monkeypatch):
    """A crash while the rows past the resume are dropped leaves the file as it was; a line cut by a crash
    mid-write is skipped by the reader and dropped by the truncation."""
    rows = "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (10, 20, 30, 40)) + '{"step": 50, "lo'
    path = tmp_path / "metrics.jsonl"
    path.write_text(rows)
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [10, 20, 30, 40]

    def crash(src: str, dst: str) -> None:
        raise OSError("killed")

    monkeypatch.setattr(metrics_module.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        truncate_metrics(str(tmp_path), 20)
    assert path.read_text() == rows
    monkeypatch.undo()
    assert truncate_metrics(str(tmp_path), 20) == 2
    assert path.read_text() == "".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (10, 20))
    assert truncate_metrics(str(tmp_path), 20) == 0
