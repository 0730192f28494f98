"""Preemption: SIGTERM / SIGINT / SIGUSR1 set a flag that the loop acts on at the next step boundary."""

from __future__ import annotations

import signal
import types

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Preemption:
    """Catches the preemption signals; `requested` is the signal number caught (0 when none)."""

    def __init__(self) -> None:
        self.requested = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.requested = signum

    def __enter__(self) -> Preemption:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
