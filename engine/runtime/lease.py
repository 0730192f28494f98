"""One writer per run directory: a lease file `{output}/lease.json`, taken by rank 0, refreshed, released.

Rank 0 takes the lease before anything else is written to the run directory, a daemon thread refreshes it
every `REFRESH_S` seconds, and it is removed when the job ends (normally, with an error, or preempted). A
second job on the same output is refused (exit status 2) with the holder named. A lease is stale, and is
taken over with a one-line note, when it has not been refreshed for its stated timeout (`TIMEOUT_S`), or
at once when its holder ran on this host and that process no longer exists.

Guarantees. Local disks (any path or file:// URL): the read-judge-write of the lease happens under an
exclusive `flock` of `{output}/lease.lock`, and lease.json is only ever replaced whole (a hard link or a
rename of a complete temporary file), so two jobs can never both take it: exactly one wins. Filesystems
without flock fall back to the object-store protocol below. Object stores through fsspec: the lease is
created with an exclusive write (`open(..., "xb")`; s3fs sends it as a conditional PUT, If-None-Match: *,
which AWS S3 honours atomically), then re-read after `SETTLE_S` seconds to confirm. Taking over a stale
lease there is a delete followed by that exclusive create. A backend that ignores exclusive writes makes
this best effort: between two jobs that start within the pause the last writer wins, and the loser learns
it at the re-read (refused) or, at worst, at its first refresh (it stops without writing more).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec

from .signals import Aborted, request_abort

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("engine")

LEASE = "lease.json"
LOCK = "lease.lock"
TIMEOUT_S = float(os.environ.get("ENGINE_LEASE_TIMEOUT_S", "120"))
REFRESH_S = float(os.environ.get("ENGINE_LEASE_REFRESH_S", "10"))
SETTLE_S = 1.0  # object stores: pause between creating the lease and re-reading it
LOCK_WAIT_S = 10.0


class LeaseError(RuntimeError):
    """The run directory's lease cannot be taken (a user-facing message; exit status 2)."""


class LeaseHeld(LeaseError):
    """Another live job holds the run directory."""


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot, Linux), to tell a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


HOST = socket.gethostname()
PID_NS = _pid_namespace()


def describe(holder: dict[str, Any]) -> str:
    """The holder of a lease in words: host, pid, since when, last refresh."""
    if not holder:
        return "an unreadable lease"
    age = time.time() - float(holder.get("refreshed", 0))
    return (
        f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
        f"since {_when(float(holder.get('started', 0)))}, "
        f"last refresh {_when(float(holder.get('refreshed', 0)))} ({age:.0f} s ago)"
    )


class Lease:
    """The lease of one run directory, held by this process once `acquire` returned."""

    def __init__(
        self,
        output: str,
        timeout_s: float | None = None,
        refresh_s: float | None = None,
        command: str | None = None,
    ):
        self.output = output.rstrip("/")
        self.url = f"{self.output}/{LEASE}"
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        self.dir = self.fs._parent(self.path)
        self.local = "file" in self.fs.protocol
        self.timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        self.refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self.command = command if command is not None else shlex.join(getattr(sys, "orig_argv", sys.argv))
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self.held = False
        self.lost = ""  # why, once another job took the lease over
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ storage

    def record(self) -> dict[str, Any]:
        """What lease.json holds while this process holds the lease."""
        now = time.time()
        return {
            "host": HOST,
            "pid": os.getpid(),
            "pid_ns": PID_NS,
            "pid_start": _start_ticks(os.getpid()),
            "started": self.started,
            "started_at": _when(self.started),
            "refreshed": now,
            "refreshed_at": _when(now),
            "timeout_s": self.timeout_s,
            "command": self.command,
            "token": self.token,
        }

    def _bytes(self) -> bytes:
        return (json.dumps(self.record(), indent=2) + "\n").encode()

    def _read(self) -> dict[str, Any] | None:
        """The current lease (None when there is none; {} when it cannot be parsed)."""
        try:
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _tmp(self) -> str:
        return f"{self.path}.{self.token}.tmp"

    def _create(self) -> bool:
        """Create lease.json only if it does not exist; False when another job's is there."""
        data = self._bytes()
        if self.local:
            tmp = self._tmp()
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, self.path)  # atomic and exclusive: a complete file appears, or EEXIST
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here: exclusive create, then write
                try:
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                return True
            finally:
                os.unlink(tmp)
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):  # no exclusive mode on this backend
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, data)
            return True

    def _replace(self) -> None:
        """Overwrite lease.json whole (readers see the old or the new file, never a mix where possible)."""
        data = self._bytes()
        if self.local:
            tmp = self._tmp()
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        else:
            self.fs.pipe_file(self.path, data)

    def _remove(self) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        """Hold `lease.lock` (local disks with flock) while the lease is read and written; yields whether held."""
        if not self.local or fcntl is None:
            yield False
            return
        fd = os.open(os.path.join(self.dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked, deadline = False, time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LeaseError(
                            f"{self.dir}/{LOCK} stayed locked for {LOCK_WAIT_S:.0f} s by another process; "
                            "is an engine process stopped (Ctrl-Z)? Resume or end it, then rerun"
                        ) from None
                    time.sleep(0.01)
                except OSError:  # this filesystem has no flock: fall back to exclusive create + re-read
                    break
            yield locked
        finally:
            os.close(fd)

    # ------------------------------------------------------------------ judging

    def stale(self, holder: dict[str, Any]) -> str:
        """Why a lease found in the run directory may be taken over ('' when its holder may be alive)."""
        if not holder:  # unparsable: judge it by its modification time
            try:
                modified = self.fs.modified(self.path).timestamp()
            except (OSError, NotImplementedError, AttributeError):
                return "the lease file is unreadable"
            age = time.time() - modified
            return f"the lease file is unreadable and {age:.0f} s old" if age > self.timeout_s else ""
        timeout = float(holder.get("timeout_s", self.timeout_s))
        age = time.time() - float(holder.get("refreshed", 0))
        if age > timeout:
            return f"no refresh for {age:.0f} s (timeout {timeout:.0f} s)"
        if holder.get("host") == HOST and holder.get("pid_ns", "") == PID_NS:
            pid = int(holder.get("pid", 0))
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"process {pid} no longer exists on {HOST}"
            except PermissionError:
                pass  # alive, another user's
            start = _start_ticks(pid)
            if holder.get("pid_start") is not None and start is not None and start != holder["pid_start"]:
                return f"process {pid} no longer exists on {HOST} (its pid now belongs to another process)"
        return ""

    def _held(self, holder: dict[str, Any]) -> LeaseHeld:
        command = f"\n  its command: {holder['command']}" if holder.get("command") else ""
        return LeaseHeld(
            f"{self.output} is in use by another job: {describe(holder)}{command}\n"
            f"  Wait for that job to finish or stop it, or give this run another run.output. A lease that "
            f"has not been refreshed for {float(holder.get('timeout_s', self.timeout_s)):.0f} s is taken "
            f"over (at once on the same host when its process is gone); if you are sure that job is gone, "
            f"delete {self.url} and rerun."
        )

    # ------------------------------------------------------------------ life cycle

    def acquire(self) -> str:
        """Take the lease or raise LeaseHeld naming the holder; returns a one-line note after a takeover."""
        note = ""
        try:
            self.fs.makedirs(self.dir, exist_ok=True)
            with self._exclusive() as locked:
                for _ in range(3):
                    holder = self._read()
                    if holder is not None:
                        why = self.stale(holder)
                        if not why:
                            raise self._held(holder)
                        note = f"note: took over the lease of {self.output} from {describe(holder)}: {why}"
                        if locked:
                            self._replace()
                            break
                        self._remove()
                    if self._create():
                        break
                else:
                    raise self._held(self._read() or {})
            if not locked:
                time.sleep(SETTLE_S)
                holder = self._read()
                if holder is None or holder.get("token") != self.token:
                    raise self._held(holder or {})
        except OSError as e:
            raise LeaseError(
                f"cannot take the lease {self.url}: {e}; pick a run.output this job can write"
            ) from e
        self.held = True
        return note

    def refresh(self) -> bool:
        """Rewrite the refresh time; False (and `lost` set) when another job took the lease over."""
        with self._exclusive():
            holder = self._read()
            if holder is None or holder.get("token") != self.token:
                taker = f"taken over by {describe(holder)}" if holder else "deleted by someone else"
                self.lost = (
                    f"the lease of {self.output} was {taker} (this job's refreshes had stalled, or the "
                    f"file was removed); this job stops without writing anything more and leaves {self.output} "
                    "to the other job"
                )
                return False
            self._replace()
        return True

    def _refresh_loop(self) -> None:
        failing = False
        while not self._stop.wait(self.refresh_s):
            try:
                if not self.refresh():
                    request_abort(self.lost)
                    return
                failing = False
            except Exception as e:  # a storage hiccup: keep trying; the timeout covers many periods
                if not failing:
                    log.warning("warning: could not refresh the lease %s: %s; retrying", self.url, e)
                failing = True

    def start(self) -> Lease:
        """Start refreshing in a daemon thread."""
        self._thread = threading.Thread(target=self._refresh_loop, name="engine-lease", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raise Aborted when the lease was lost while running."""
        if self.lost:
            raise Aborted(self.lost)

    def release(self) -> None:
        """Stop refreshing and remove the lease if it is still this process's."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        if not self.held or self.lost:
            return
        self.held = False
        try:
            with self._exclusive():
                holder = self._read()
                if holder is not None and holder.get("token") == self.token:
                    self._remove()
        except (OSError, LeaseError) as e:
            log.warning("warning: could not remove the lease %s: %s", self.url, e)


def take(output: str, dist: Any) -> Lease | None:
    """Rank 0 takes the run directory's lease and starts refreshing it; every rank learns the outcome.

    Raises LeaseError on every rank when rank 0 could not take it (only rank 0's message names the holder).
    """
    lease: Lease | None = None
    error: Exception | None = None
    if dist.main:
        lease = Lease(output)
        try:
            note = lease.acquire()
        except Exception as e:  # every rank must reach the agreement below, whatever went wrong
            error = e
        else:
            if note:
                log.warning("%s", note)
    refused = error is not None
    if dist.distributed:
        import torch

        refused = dist.all_reduce(torch.tensor([float(refused)], dtype=torch.float64)).item() > 0
    if refused:
        if error is not None:
            raise error
        raise LeaseError(f"rank 0 could not take the lease of {output}")
    return lease.start() if lease is not None else None
