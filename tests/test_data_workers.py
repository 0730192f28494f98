"""Data worker processes (`data.workers`, engine/runtime/loader.py): the batches and the trained weights are the ones
drawn inline, a worker's exception and a worker's death stop the run with a clear error, and the run resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import REPO, SPEC, TINY, env, train_in_process

from engine import registry
from engine.data.stream import Stream
from engine.runtime.loader import DataWorkerError, Prefetched, resolve_workers
from schemas import load_spec
from schemas.data import SparseParity


class _Pid:
    """A generator that stamps each example with the process that drew it."""

    def __init__(self, gen):
        self.gen, self.vocab = gen, gen.vocab

    def sample(self, rng, n, split="train", length=None):
        examples = self.gen.sample(rng, n, split, length)
        examples.meta["pid"] = np.full(len(examples), os.getpid())
        return examples


def _stream(per_rank: int = 8) -> Stream:
    gen = registry.build_data(SparseParity(k=(1, 3), length={"train": [8, 16], "eval": [17, 24]}))
    return Stream(_Pid(gen), seed=3, stage="train", rank=0, per_rank=per_rank)


def test_workers_draw_the_steps_in_order_and_the_batches_are_the_inline_ones() -> None:
    stream = _stream()
    loader = Prefetched(stream, start=3, stop=10, workers=3)
    try:
        pids = set()
        for step in range(3, 10):
            got, want = loader.batch(step), stream.batch(step)
            np.testing.assert_array_equal(got.tokens, want.tokens)
            np.testing.assert_array_equal(got.loss_mask, want.loss_mask)
            pids.add(int(got.meta["pid"][0]))
        assert os.getpid() not in pids and len(pids) == 3  # each of the 3 workers drew some
        # a step out of turn (the example's text, the last step's images) is drawn here, and is the same batch
        again = loader.batch(4)
        assert int(again.meta["pid"][0]) == os.getpid()
        np.testing.assert_array_equal(again.tokens, stream.batch(4).tokens)
        assert loader.per_rank == 8  # the stream's attributes show through
    finally:
        loader.close()


def test_no_workers_draws_inline() -> None:
    loader = Prefetched(_stream(), start=0, stop=5, workers=0)
    assert int(loader.batch(0).meta["pid"][0]) == os.getpid()


class _Failing:
    """A stream whose step 5 raises, as a generator bug would."""

    per_rank = 1

    def __init__(self, error: type[Exception]):
        self.error = error

    def batch(self, step: int):
        if step == 5:
            raise self.error(f"no batch for step {step}")
        return step


@pytest.mark.parametrize("error", [ValueError, RuntimeError])
def test_a_workers_exception_reaches_the_run_as_itself_with_its_traceback(error) -> None:
    loader = Prefetched(_Failing(error), start=3, stop=9, workers=2)
    assert [loader.batch(3), loader.batch(4)] == [3, 4]
    with pytest.raises(error, match=r"(?s)Traceback.*in batch.*no batch for step 5") as caught:
        loader.batch(5)
    assert not isinstance(caught.value, DataWorkerError)  # not mistaken for a dead worker
    loader.close()


def test_workers_ended_by_the_jobs_stop_signal_leave_the_step_to_finish_here(monkeypatch) -> None:
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter as Iter

    monkeypatch.setattr(Iter._try_get_data, "__defaults__", (0.2,))
    stop = []
    loader = Prefetched(_Slow(), start=0, stop=1000, workers=1, stopping=lambda: bool(stop))
    pid = loader.batch(0)
    stop.append(signal.SIGTERM)  # the job was asked to stop, and the signal reached the worker too
    os.kill(pid, signal.SIGTERM)
    drawn = [loader.batch(step) for step in range(1, 30)]
    assert drawn[-1] == os.getpid()  # drawn here once the worker was gone; no DataWorkerError
    loader.close()


class _Slow:
    """A stream that says which process drew each step."""

    def batch(self, step: int):
        time.sleep(0.02)
        return os.getpid()


def test_a_dead_worker_stops_the_run_instead_of_hanging(monkeypatch) -> None:
    # the DataLoader looks at its workers' health every MP_STATUS_CHECK_INTERVAL (5 s); sooner here
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter as Iter

    monkeypatch.setattr(Iter._try_get_data, "__defaults__", (0.2,))
    loader = Prefetched(_Slow(), start=0, stop=1000, workers=1)
    pid = loader.batch(0)
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    t0 = time.perf_counter()
    with pytest.raises(DataWorkerError, match=rf"died while step \d+ was drawn.*{pid}"):
        for step in range(1, 1000):
            loader.batch(step)
    assert time.perf_counter() - t0 < 10
    loader.close()


def test_auto_is_none_on_cpu_and_the_ranks_share_of_the_cores_less_one_on_cuda(monkeypatch) -> None:
    assert resolve_workers("auto", torch.device("cpu")) == 0
    assert resolve_workers(3, torch.device("cpu")) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    cuda = torch.device("cuda", 0)
    assert resolve_workers("auto", cuda, local_world=8) == 1  # 2 cores per rank
    assert resolve_workers("auto", cuda, local_world=2) == 4  # capped
    assert resolve_workers("auto", cuda, local_world=16) == 0


class _Dying:
    """A generator whose worker process kills itself at its 8th batch."""

    def __init__(self, gen, parent: int):
        self.gen, self.vocab, self.parent, self.calls = gen, gen.vocab, parent, 0

    def __getattr__(self, name):
        if "gen" not in self.__dict__:  # while unpickling
            raise AttributeError(name)
        return getattr(self.gen, name)

    def sample(self, *args, **kw):
        if os.getpid() != self.parent:
            self.calls += 1
            if self.calls == 8:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.gen.sample(*args, **kw)


def _tiny(output, workers: int, steps: int = 12):
    return load_spec(
        SPEC,
        [
            *TINY,
            f"run.output={output}",
            f"stages.train.schedule.steps={steps}",
            "stages.train.checkpoint.every=4",
            f"stages.train.data.workers={workers}",
        ],
    )


def _weights(output) -> dict[str, torch.Tensor]:
    return torch.load(f"{output}/train/final/model.pt")


def test_three_workers_train_the_same_weights_and_resume_after_a_dead_worker(tmp_path, monkeypatch) -> None:
    train_in_process(_tiny(tmp_path / "inline", 0))
    train_in_process(_tiny(tmp_path / "workers", 3))
    inline, workers = _weights(tmp_path / "inline"), _weights(tmp_path / "workers")
    assert all(torch.equal(inline[k], workers[k]) for k in inline)

    # a worker that dies (here: at its 8th batch, after the checkpoint of step 4) stops the run; the checkpoints
    # stay, and a rerun finishes with the same weights
    build = registry.build_data
    from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter as Iter

    monkeypatch.setattr(Iter._try_get_data, "__defaults__", (0.2,))
    monkeypatch.setattr(registry, "build_data", lambda cfg: _Dying(build(cfg), os.getpid()))
    with pytest.raises(DataWorkerError):
        train_in_process(_tiny(tmp_path / "dies", 1))
    assert not (tmp_path / "dies/train/final").exists()
    assert sorted(p.name for p in (tmp_path / "dies/train/checkpoints").iterdir())  # the steps before it
    monkeypatch.setattr(registry, "build_data", build)
    train_in_process(_tiny(tmp_path / "dies", 0))  # `workers` may change on resume
    resumed = _weights(tmp_path / "dies")
    assert all(torch.equal(inline[k], resumed[k]) for k in inline)


def test_the_data_package_stays_free_of_torch() -> None:
    # generators are numpy-only (docs/design.md); the workers' machinery lives in engine/runtime/loader.py
    code = (
        "import sys, pkgutil, importlib, engine.data\n"
        "for m in pkgutil.iter_modules(engine.data.__path__): importlib.import_module('engine.data.' + m.name)\n"
        "print(sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env(), capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
