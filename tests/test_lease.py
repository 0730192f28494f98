"""One writer per run directory, workers that die with their launcher, and `engine launch`'s exit statuses."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from helpers import REPO, SPEC, TINY, engine, env

from engine.runtime import lease as leaselib
from engine.runtime import signals
from engine.runtime.lease import HOST, PID_NS, Lease, LeaseHeld

STEPS = 2000  # far more than any test lets run: every run here is stopped or fails early
LONG = [
    *TINY,
    f"stages.train.schedule.steps={STEPS}",
    "stages.train.checkpoint.every=20",
    "stages.train.evals.0.every=1000",
]

HOLDER = """
import sys, time
from engine.runtime.lease import Lease
Lease(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""

RACER = """
import os, sys, time
from engine.runtime.lease import Lease, LeaseHeld
out, go, stop = sys.argv[1:4]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    Lease(out).acquire()
    print("won", flush=True)
except LeaseHeld:
    print("refused", flush=True)
while not os.path.exists(stop):
    time.sleep(0.01)
"""


def python(code: str, *args: str) -> subprocess.Popen:
    """Start `python -c code args` with the repo importable, its stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True
    )


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def write_lease(out: Path, **fields) -> dict:
    """Put another job's lease.json in `out` (this host, a fresh refresh, unless `fields` say otherwise)."""
    now = time.time()
    record = {
        "host": HOST,
        "pid": os.getpid(),
        "pid_ns": PID_NS,
        "pid_start": None,
        "started": now - 60,
        "refreshed": now,
        "timeout_s": 120.0,
        "command": "python -m engine other.yaml",
        "token": "another-job",
        **fields,
    }
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "lease.lock", "a") as lock:  # as a job taking the lease over would: under its lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        (out / "lease.json").write_text(json.dumps(record))
    return record


def complete_checkpoints(out: Path) -> list[int]:
    """Steps of the complete checkpoints of the train stage."""
    return sorted(
        int(p.parent.name.split("-")[1])
        for p in (out / "train" / "checkpoints").glob("step-*/train_state.json")
    )


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 180) -> None:
    """Poll until the first complete checkpoint exists (the run is then mid-stage)."""
    t0 = time.time()
    while not complete_checkpoints(out):
        assert proc.poll() is None, f"run ended before its first checkpoint:\n{proc.stdout.read()}"
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.01)


def running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def children(pid: int) -> list[int]:
    """The pids of the live child processes of `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


@pytest.fixture
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Object-store leases are confirmed after a pause; memory:// needs none."""
    monkeypatch.setattr(leaselib, "SETTLE_S", 0.0)


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """`engine run` in this process reconfigures the root logger; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    signals.reset()


# ----------------------------------------------------------------------------- taking the lease


def test_fresh_lease_of_another_job_is_refused_naming_it(tmp_path):
    write_lease(tmp_path, host="gpu-node-7", pid=4242)
    with pytest.raises(LeaseHeld) as e:
        Lease(str(tmp_path)).acquire()
    message = str(e.value)
    assert "host gpu-node-7, pid 4242, since " in message and "last refresh" in message
    assert "python -m engine other.yaml" in message and f"delete {tmp_path}/lease.json" in message
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == "another-job", "left untouched"


def test_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    pid = dead_pid()
    write_lease(tmp_path, pid=pid)
    lease = Lease(str(tmp_path))
    note = lease.acquire()
    assert f"process {pid} no longer exists on {HOST}" in note and "took over" in note
    assert json.loads((tmp_path / "lease.json").read_text())["pid"] == os.getpid()
    lease.release()
    assert not (tmp_path / "lease.json").exists()


def test_lease_not_refreshed_within_its_timeout_is_taken_over(tmp_path):
    write_lease(tmp_path, host="gpu-node-7", refreshed=time.time() - 500, timeout_s=120.0)
    lease = Lease(str(tmp_path))
    assert "no refresh for 500 s (timeout 120 s)" in lease.acquire()
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == lease.token
    lease.release()


@pytest.mark.parametrize("stale", [False, True], ids=["empty", "stale-lease"])
def test_racing_processes_exactly_one_takes_the_lease(tmp_path, stale):
    out = tmp_path / "run"
    if stale:
        write_lease(out, pid=dead_pid())
    go, stop = tmp_path / "go", tmp_path / "stop"
    racers = [python(RACER, str(out), str(go), str(stop)) for _ in range(4)]
    try:
        assert all(p.stdout.readline().strip() == "ready" for p in racers)
        go.touch()
        results = sorted(p.stdout.readline().strip() for p in racers)
    finally:
        stop.touch()
        for p in racers:
            p.wait(timeout=60)
    assert results == ["refused", "refused", "refused", "won"]


def test_memory_filesystem_lease(no_settle):
    url = "memory://lease-test/run"
    first = Lease(url)
    assert first.acquire() == ""
    with pytest.raises(LeaseHeld, match=f"pid {os.getpid()}"):
        Lease(url).acquire()
    first.release()
    assert not fsspec.filesystem("memory").exists("/lease-test/run/lease.json")
    second = Lease(url)
    second.acquire()
    second.release()


def test_lost_lease_is_noticed_by_the_refresh(tmp_path):
    lease = Lease(str(tmp_path))
    lease.acquire()
    assert lease.refresh()
    write_lease(tmp_path, host="gpu-node-7", pid=4242)  # another job took it over
    assert not lease.refresh()
    assert "taken over by host gpu-node-7, pid 4242" in lease.lost
    lease.release()
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == "another-job", "not ours to remove"


# ----------------------------------------------------------------------------- through `engine run`


@pytest.mark.slow
def test_second_job_on_the_same_output_is_refused_before_writing(tmp_path):
    holder = python(HOLDER, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "held"
        r = engine(SPEC, f"run.output={tmp_path}", *TINY, "stages.train.schedule.steps=5")
    finally:
        holder.kill()
        holder.wait()
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"is in use by another job: host {socket.gethostname()}, pid {holder.pid}, since" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "spec.yaml").exists() and not (tmp_path / "train").exists()


@pytest.mark.slow
def test_stale_lease_is_taken_over_with_one_line_and_released_at_exit(tmp_path):
    pid = dead_pid()
    write_lease(tmp_path, pid=pid)
    r = engine(SPEC, f"run.output={tmp_path}", *TINY, "stages.train.schedule.steps=5")
    assert r.returncode == 0, r.stdout + r.stderr
    notes = [line for line in r.stdout.splitlines() if "took over the lease" in line]
    assert len(notes) == 1 and f"process {pid} no longer exists" in notes[0]
    assert (tmp_path / "train" / "final" / "done.json").exists()
    assert not (tmp_path / "lease.json").exists(), "released at a normal exit"


@pytest.mark.slow
def test_lease_released_when_sigterm_stops_the_run(tmp_path):
    cmd = [sys.executable, "-m", "engine", SPEC, f"run.output={tmp_path}", *LONG]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for_checkpoint(proc, tmp_path)
    assert (tmp_path / "lease.json").exists(), "held while running"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert not (tmp_path / "lease.json").exists()


@pytest.mark.slow
def test_lease_released_when_the_run_raises(tmp_path, monkeypatch, cli_logging):
    from engine.cli import main
    from engine.objectives.next_token import NextToken

    def broken(self, batch):
        raise RuntimeError("a bug in the objective")

    monkeypatch.setattr(NextToken, "__call__", broken)
    with pytest.raises(RuntimeError, match="a bug in the objective"):
        main([SPEC, f"run.output={tmp_path}", *TINY, "stages.train.schedule.steps=5"])
    assert (tmp_path / "spec.yaml").exists() and not (tmp_path / "lease.json").exists()


def test_memory_filesystem_lease_is_taken_refused_and_released(no_settle):
    """The object-store protocol (exclusive create, then a re-read) on memory://; `engine run` itself refuses
    memory:// outputs, so the lease is exercised directly."""
    from engine.runtime.distributed import Dist

    url = "memory://lease-run/parity"
    fs = fsspec.filesystem("memory")
    lease = leaselib.take(url, Dist())
    try:
        assert json.loads(fs.cat("/lease-run/parity/lease.json"))["pid"] == os.getpid()
        with pytest.raises(leaselib.LeaseHeld, match="lease-run/parity"):
            leaselib.Lease(url).acquire()  # a second job: this process is alive and the lease is fresh
    finally:
        lease.release()
    assert not fs.exists("/lease-run/parity/lease.json")


def test_lost_lease_stops_the_run_without_a_checkpoint(tmp_path, monkeypatch, capsys, cli_logging):
    from engine.cli import main
    from engine.objectives.next_token import NextToken

    monkeypatch.setattr(leaselib, "REFRESH_S", 0.02)
    real, calls = NextToken.__call__, {"n": 0}

    def taken_over_at_step_8(self, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # another job takes the lease over; wait until the refresher has noticed
            write_lease(tmp_path, host="gpu-node-7", pid=4242)
            t0 = time.time()
            while not signals.Preemption().abort:
                assert time.time() - t0 < 60, "the refresher never noticed"
                time.sleep(0.01)
        return real(self, batch)

    monkeypatch.setattr(NextToken, "__call__", taken_over_at_step_8)
    code = main(
        [
            SPEC,
            f"run.output={tmp_path}",
            *TINY,
            "stages.train.schedule.steps=20",
            "stages.train.checkpoint.every=5",
        ]
    )
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert "taken over by host gpu-node-7, pid 4242" in out.out + out.err
    assert complete_checkpoints(tmp_path) == [5], "nothing written after the lease was lost"
    assert not (tmp_path / "train" / "final").exists()
    assert json.loads((tmp_path / "lease.json").read_text())["token"] == "another-job"


# ----------------------------------------------------------------------------- launchers


@pytest.mark.slow
@pytest.mark.distributed
def test_workers_stop_when_the_torchrun_launcher_is_killed(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "engine", SPEC, f"run.output={tmp_path}", *LONG]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    wait_for_checkpoint(proc, tmp_path)
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    proc.kill()
    try:
        # The workers hold the other end of the pipe: EOF means every one of them has exited.
        out, _ = proc.communicate(timeout=120)
        t0 = time.time()
        while any(running(pid) for pid in workers):
            assert time.time() - t0 < 30, f"workers still running:\n{out}"
            time.sleep(0.05)
    finally:  # never leave orphans behind when the assertion fails
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    stops = [line for line in out.splitlines() if "exited: checkpoint written at step" in line]
    assert len(stops) == 1 and f"the launcher (pid {proc.pid}) exited" in stops[0], out
    stopped = int(stops[0].split("at step ")[1].split(";")[0])
    assert complete_checkpoints(tmp_path)[-1] == stopped < STEPS
    rows = [json.loads(line) for line in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) <= stopped, "no step logged after the stop checkpoint"
    assert not (tmp_path / "train" / "final").exists()
    assert not (tmp_path / "lease.json").exists()


def launch(out: Path, *overrides: str) -> subprocess.Popen:
    """Start `engine launch --standalone --nproc-per-node 2 SPEC` on the tiny run."""
    cmd = [sys.executable, "-m", "engine", "launch", "--standalone", "--nproc-per-node", "2"]
    cmd += [SPEC, f"run.output={out}", *overrides]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_launch_sigterm_exits_143_with_one_message_line(tmp_path):
    proc = launch(tmp_path, *LONG)
    wait_for_checkpoint(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert out.count("received") == 1 and "signal 15 received: checkpoint written at step" in out, out
    assert "Traceback" not in out and "SignalException" not in out and "closing signal" not in out, out


@pytest.mark.slow
@pytest.mark.distributed
def test_launch_user_error_in_a_worker_exits_2_with_its_message(tmp_path):
    # Valid for one rank (resources asks for 1), but 15 examples cannot split over the 2 launched.
    proc = launch(tmp_path, *TINY, "resources.procs_per_node=1", "stages.train.batch.global=15")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out
    assert out.count("is not divisible by the 2 ranks launched") == 1, out
    assert "ChildFailedError" not in out and "FAILED" not in out and "Traceback" not in out, out


def test_launch_maps_worker_failures_to_engine_statuses(capsys):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from engine.launch import _failed

    def failed(*codes: int) -> ChildFailedError:
        return ChildFailedError(
            "engine", {r: ProcessFailure(r, 1000 + r, c, "/nonexistent") for r, c in enumerate(codes)}
        )

    assert _failed(failed(-15, 3)) == 3, "a non-finite loss, whatever torchrun did to the other rank"
    assert _failed(failed(2, 2)) == 2
    assert _failed(failed(143, 143)) == 143, "workers signalled directly (e.g. by Slurm)"
    assert capsys.readouterr().err == ""
    assert _failed(failed(1, -15)) == 1
    assert "engine FAILED" in capsys.readouterr().err, "any other failure: torchrun's own report"
