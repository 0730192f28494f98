"""A stage's batches drawn ahead of the step by worker processes, so the step does not wait on Python.

A stream's `batch(step)` is a pure function of (seed, stage, step, rank) (engine/data/stream.py), so any process
may draw any step: `Prefetched` hands the steps start, start+1, ... to `workers` processes (a torch DataLoader
over the step numbers), each keeping `prefetch` batches ready, and yields them in step order. The workers are
forked from a fork server, a clean process that has imported the engine and started no threads, and are sent
the pickled stream: forking the training process itself, whose threads (the lease's heartbeat, TensorBoard's
writer, decoding pools) may hold locks at that instant, can leave a worker waiting forever. The batches are the very ones the training process would have drawn itself, so the run's
result does not depend on the number of workers. A step asked for out of turn (the first example's text, the
images of the last step) is drawn inline, as with no workers.

On CUDA the batches' arrays are copied into pinned (page-locked) memory by a thread of the training process,
so that their copy to the device is a DMA. A worker's exception reaches the training process as the same
exception type, its message holding the worker's traceback. A worker that dies (killed, out of memory) is
noticed where the next batch is awaited, within MP_STATUS_CHECK_INTERVAL (5 s), and stops the run with
`DataWorkerError`; the last checkpoint stays, and the same command resumes. Workers that end because the job
is being stopped (a signal to the whole process group or control group reaches them too) do not stop it:
once `stopping()` says a stop was asked for, the batch is drawn here and the step ends as usual, so the run
still checkpoints at its step boundary.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from engine.data.base import set_worker

MAX_AUTO_WORKERS = 4  # `workers: auto` on CUDA: at most this many per rank (generation rarely needs more)
PRELOAD = [
    "torch",
    "engine.runtime.loader",
    "engine.registry",
]  # imported once by the fork server, not per worker


def _fork_server() -> multiprocessing.context.BaseContext:
    """The fork-server context the workers start from (module docstring), importing PRELOAD when it starts."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class DataWorkerError(RuntimeError):
    """A data worker process raised or died; the message holds its traceback or how it died."""


def resolve_workers(workers: int | str, device: torch.device, local_world: int = 1) -> int:
    """Worker processes per rank for the spec's `data.workers`: the number given, or for `auto` none on CPU
    (the step's own threads use the cores) and on CUDA the rank's share of the cores less one, at most
    MAX_AUTO_WORKERS."""
    if workers != "auto":
        return int(workers)
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) // max(1, local_world)
    return max(0, min(MAX_AUTO_WORKERS, cores - 1))


def pinned(batch: Any) -> Any:
    """A copy of a batch (a dataclass of numpy arrays and dicts of them) whose numeric arrays live in pinned
    memory (numpy views of pinned tensors); other fields are kept as they are."""

    def pin(value: Any) -> Any:
        if isinstance(value, np.ndarray) and value.dtype.kind in "biufc" and value.size:
            return torch.from_numpy(np.ascontiguousarray(value)).pin_memory().numpy()
        if isinstance(value, dict):
            return {k: pin(v) for k, v in value.items()}
        return value

    return dataclasses.replace(
        batch, **{f.name: pin(getattr(batch, f.name)) for f in dataclasses.fields(batch)}
    )


class _Pinnable:
    """A batch in transit, which the DataLoader's pin-memory thread knows how to pin (`pin_memory`)."""

    def __init__(self, step: int, batch: Any):
        self.step, self.batch = step, batch

    def pin_memory(self) -> _Pinnable:
        """The same batch in pinned memory."""
        return _Pinnable(self.step, pinned(self.batch))


class _Steps(Dataset):
    """Step number -> that step's batch of `stream` (what each worker process draws)."""

    def __init__(self, stream: Any):
        self.stream = stream

    def __getitem__(self, step: int) -> _Pinnable:
        return _Pinnable(step, self.stream.batch(step))


def _init_worker(index: int) -> None:
    """In each worker process: tell the data package which worker it is (generators that write files)."""
    set_worker(index)


def _as_is(item: Any) -> Any:
    """The DataLoader's collate: items are whole batches already."""
    return item


class Prefetched:
    """The batches of steps start..stop-1 of `stream`, drawn ahead by `workers` processes (none: inline).

    `batch(step)` has the stream's contract; called for the steps in order it returns the prefetched batches.
    """

    def __init__(
        self,
        stream: Any,
        start: int,
        stop: int,
        workers: int,
        prefetch: int = 2,
        pin: bool = False,
        stopping: Callable[[], bool] = lambda: False,
    ):
        self.stream, self.next, self.stop, self.workers = stream, start, stop, workers
        self.stopping = stopping  # whether the job was asked to stop (its signals may have ended the workers)
        self._loader: DataLoader | None = None
        self._it: Iterator[_Pinnable] | None = None
        if workers > 0 and start < stop:
            self._loader = DataLoader(
                _Steps(stream),
                batch_size=None,
                sampler=range(start, stop),
                num_workers=workers,
                prefetch_factor=prefetch,
                collate_fn=_as_is,
                worker_init_fn=_init_worker,
                pin_memory=pin,
                multiprocessing_context=_fork_server(),
            )

    def __getattr__(self, name: str) -> Any:  # the wrapped stream's attributes (gen, per_rank, ...)
        return getattr(self.stream, name)

    def batch(self, step: int) -> Any:
        """This rank's batch of `step`: the next prefetched one when `step` is the next step, else drawn here."""
        if self._loader is None or step != self.next or step >= self.stop:
            return self.stream.batch(step)
        if self._it is None:
            self._it = self._start()
        try:
            item = next(self._it)
        except StopIteration:
            self.close()
            if self.stopping():
                return self.stream.batch(step)
            raise DataWorkerError(f"the data workers ended before step {step}") from None
        except Exception as e:
            self.close()
            if isinstance(e, RuntimeError) and "exited unexpectedly" in str(e):  # a worker died
                if self.stopping():  # ended by the signal that stops the job: finish the step here
                    return self.stream.batch(step)
                raise DataWorkerError(f"a data worker died while step {step} was drawn: {e}") from e
            raise  # a worker's own exception, of its type, with its traceback in the message
        if item.step != step:  # cannot happen with an in-order loader; never train on the wrong step
            self.close()
            raise DataWorkerError(f"data workers returned step {item.step} for step {step}")
        self.next = step + 1
        return item.batch

    def _start(self) -> Iterator[_Pinnable]:
        """Start the workers. The DataLoader's SIGCHLD handler, which raises a dead child's error at whatever
        line the training process runs (a checkpoint's write included), is taken back out: a dead worker is
        found where the next batch is awaited (within MP_STATUS_CHECK_INTERVAL, 5 s)."""
        assert self._loader is not None
        if threading.current_thread() is not threading.main_thread():
            return iter(self._loader)
        previous = signal.getsignal(signal.SIGCHLD)
        it = iter(self._loader)
        if previous is not None:  # None: a handler installed from C, which Python cannot put back
            signal.signal(signal.SIGCHLD, previous)
        return it

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        it, self._it, self._loader = self._it, None, None
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
