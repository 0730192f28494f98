"""Workers that die with their launcher: a daemon thread notices when the torchrun launcher is gone.

torchrun starts every worker in a session of its own, so a launcher killed with SIGKILL takes no worker
with it: they would go on training and writing the run directory. Each worker therefore remembers the
parent pid it started with and polls `os.getppid()`, which changes (to 1 or a subreaper) once the parent
has died. It then asks for a stop exactly as SIGTERM does (checkpoint at the next step boundary, the ranks
agree, exit 128 + 15), and if the process is still alive after the grace period torchrun itself would
have allowed between SIGTERM and SIGKILL, it exits anyway: a rank stuck in a collective whose peer died
must not hang forever.

Why polling and not prctl(PR_SET_PDEATHSIG): the death signal fires when the *thread* that forked the
worker exits, not the process, it is Linux-only and needs ctypes, it is lost if the parent died before the
worker set it, and it would arrive as a plain SIGTERM, indistinguishable from a real one. The thread is
needed for the deadline anyway; one `getppid()` call every half second costs nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from .signals import request_stop

log = logging.getLogger("engine")

POLL_S = 0.5
KILLED = 128 + signal.SIGKILL  # the status the deadline exits with, as torchrun's own SIGKILL would give


def grace_s() -> float:
    """Seconds a worker may take to stop once its launcher is gone: torchrun's SIGTERM -> SIGKILL timeout."""
    for name in ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SHUTDOWN_TIMEOUT"):
        if os.environ.get(name, "").strip():
            try:
                return float(os.environ[name])
            except ValueError:
                break
    return 30.0


class LauncherWatchdog:
    """Watches the parent pid this process started with; stops the run when it changes, exits after `grace`."""

    def __init__(self, grace: float | None = None, poll: float = POLL_S):
        self.parent = os.getppid()
        self.grace = grace_s() if grace is None else grace
        self.poll = poll
        self.gone = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="engine-launcher-watchdog", daemon=True)

    def start(self) -> LauncherWatchdog:
        """Start watching (a daemon thread: it never keeps the process alive)."""
        self._thread.start()
        return self

    def _watch(self) -> None:
        while os.getppid() == self.parent:
            time.sleep(self.poll)
        self.gone.set()
        request_stop(signal.SIGTERM, f"the launcher (pid {self.parent}) exited")
        time.sleep(self.grace)
        log.warning(
            "the launcher (pid %d) exited and this worker did not stop within %.0f s "
            "(TORCH_ELASTIC_SHUTDOWN_TIMEOUT); exiting without a checkpoint",
            self.parent,
            self.grace,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(KILLED)


_current: LauncherWatchdog | None = None


def watch_launcher() -> LauncherWatchdog | None:
    """Under torchrun (RANK set) start the watchdog; a plain process has no launcher to watch (None)."""
    global _current
    if "RANK" not in os.environ:
        return None
    _current = LauncherWatchdog().start()
    return _current


def check_now() -> None:
    """Look for the launcher's death at once (not at the next poll): when another rank noticed it first, this
    rank's stop then reports the same cause."""
    if _current is not None and not _current.gone.is_set() and os.getppid() != _current.parent:
        request_stop(signal.SIGTERM, f"the launcher (pid {_current.parent}) exited")
