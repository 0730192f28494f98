"""Shared helpers for the tests: the repo root, tiny-run overrides, and subprocess launchers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPEC = str(REPO / "specs" / "sparse_parity.yaml")

# A sparse-parity run small enough for tests: one block of width 32, a few steps per second at most.
TINY = [
    "stages.train.model.dim=32",
    "stages.train.model.depth=1",
    "stages.train.model.heads=2",
    "stages.train.model.ffn.hidden=64",
    "stages.train.batch.global=16",
    "stages.train.schedule.warmup=5",
    "stages.train.evals.0.examples=32",
    "stages.train.logging.every=10",
]


def env() -> dict[str, str]:
    """Environment for child processes: the repo importable, one thread per process, unbuffered output."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("OMP_NUM_THREADS", "1")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def engine(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `python -m engine ARGS` to completion and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def torchrun(*args: str, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc_per_node=N ARGS` on CPU and capture its output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def train_in_process(spec) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Run a loaded spec's stages in this process; (each stage's final metrics, the first stage's logged rows)."""
    from engine.runtime.distributed import Dist
    from engine.runtime.metrics import read_metrics
    from engine.runtime.trainer import run_spec

    results = run_spec(spec, Dist())
    stage = next(iter(spec.stages))
    return results, read_metrics(f"{spec.run.output.rstrip('/')}/{stage}")
