"""Crash and preemption: kill -9 and SIGTERM mid-stage, then resume to the same weights bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, SPEC, TINY, engine, env

from engine.runtime.metrics import read_metrics

pytestmark = pytest.mark.slow

STEPS = 400
RUN = [
    *TINY,
    f"stages.train.schedule.steps={STEPS}",
    "stages.train.checkpoint.every=20",
    "stages.train.evals.0.every=200",
]


def start(out: Path, *extra: str, session: bool = False) -> subprocess.Popen:
    """Start the tiny run in the background (in a process group of its own with `session`)."""
    cmd = [sys.executable, "-m", "engine", SPEC, f"run.output={out}", *RUN, *extra]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=session,
    )


def complete_checkpoints(out: Path) -> list[int]:
    """Steps of the complete checkpoints of the train stage."""
    return sorted(
        int(p.parent.name.split("-")[1])
        for p in (out / "train" / "checkpoints").glob("step-*/train_state.json")
    )


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 120) -> None:
    """Poll until the first complete checkpoint exists (the run is then mid-stage)."""
    t0 = time.time()
    while not complete_checkpoints(out):
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()}"
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.005)


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    """The consolidated weights of the finished stage."""
    return torch.load(out / "train" / "final" / "model.pt", weights_only=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of the uninterrupted run."""
    out = tmp_path_factory.mktemp("baseline")
    r = engine(SPEC, f"run.output={out}", *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    return final_weights(out)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bitwise equality of two state dicts."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted(tmp_path, baseline):
    proc = start(tmp_path)
    wait_for_checkpoint(proc, tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "train" / "final" / "done.json").exists(), (
        "the kill came too late to test anything"
    )
    killed_at = complete_checkpoints(tmp_path)[-1]
    r = engine(SPEC, f"run.output={tmp_path}", *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed from step {killed_at}" in r.stdout
    assert_same(final_weights(tmp_path), baseline)
    rows = read_metrics(str(tmp_path / "train"))
    assert max(r["step"] for r in rows) == STEPS


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_checkpoints_exits_and_resumes(tmp_path, baseline, workers):
    # with data workers, the signal goes to the whole process group, as torchrun and a terminal send it: the
    # workers end too, and the run still checkpoints and stops cleanly
    proc = start(tmp_path, f"stages.train.data.workers={workers}", session=bool(workers))
    wait_for_checkpoint(proc, tmp_path)
    before = complete_checkpoints(tmp_path)[-1]
    if workers:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "checkpoint written at step" in out
    stopped = complete_checkpoints(tmp_path)[-1]
    assert before <= stopped < STEPS
    state = json.loads(
        (tmp_path / "train" / "checkpoints" / f"step-{stopped:08d}" / "train_state.json").read_text()
    )
    assert state["step"] == stopped and state["tokens"] > 0
    r = engine(SPEC, f"run.output={tmp_path}", *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_same(final_weights(tmp_path), baseline)


@pytest.mark.slow
def test_completed_stage_is_skipped(tmp_path):
    args = [SPEC, f"run.output={tmp_path}", *TINY, "stages.train.schedule.steps=10"]
    assert engine(*args).returncode == 0
    r = engine(*args)
    assert r.returncode == 0 and "already complete" in r.stdout
