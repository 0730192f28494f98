"""Stop requests honoured at the next step boundary: preemption signals, a lost launcher, a lost lease.

SIGTERM / SIGINT / SIGUSR1 set a flag; so do the launcher watchdog (`request_stop`) and the run-directory
lease when another job took it over (`request_abort`). The flags are process-wide, as signals are: a
request made before the trainer's `Preemption` context is entered is seen as soon as it is.
"""

from __future__ import annotations

import signal
import threading
import types

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Aborted(RuntimeError):
    """The run must stop without writing anything more (its run directory now belongs to another job)."""


_lock = threading.RLock()  # re-entrant: a signal handler may run while the main thread holds it
_state: dict[str, int | str] = {"signum": 0, "cause": "", "abort": ""}


def request_stop(signum: int, cause: str) -> None:
    """Ask for a checkpoint-and-exit at the next step boundary, as signal `signum` would; `cause` says why."""
    with _lock:
        if not _state["signum"]:
            _state["signum"], _state["cause"] = signum, cause


def request_abort(reason: str) -> None:
    """Ask for an exit at the next step boundary WITHOUT a checkpoint; `reason` is the user's message."""
    with _lock:
        if not _state["abort"]:
            _state["abort"] = reason


def reset() -> None:
    """Forget every request (the next run in this process starts clean)."""
    with _lock:
        _state.update(signum=0, cause="", abort="")


class Preemption:
    """Catches the preemption signals while entered; reads the process-wide stop requests."""

    def __init__(self) -> None:
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> int:
        """The signal number of the stop request (0 when none)."""
        return int(_state["signum"])

    @property
    def cause(self) -> str:
        """Why the run stops: `signal 15 received`, or what the watchdog saw."""
        if not self.requested:
            return "another rank was asked to stop (a signal, or its launcher exited)"
        return str(_state["cause"]) or f"signal {self.requested} received"

    @property
    def abort(self) -> str:
        """The reason to stop without a checkpoint ('' when none)."""
        return str(_state["abort"])

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        with _lock:  # the latest signal is the one reported (and a second Ctrl-C is recognised)
            _state.update(signum=signum, cause="")

    def __enter__(self) -> Preemption:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        reset()
