"""Benchmark: seconds per GB of the stdlib checksums and hashes against writing and reading the same bytes.

Checkpoint files are hashed in chunks right after they are written and again before they are loaded, so
what matters is the cost of a checksum next to the I/O it rides on. Every candidate that needs no new
dependency (zlib.crc32, zlib.adler32 and every hashlib algorithm with a fixed digest) runs over the same
random buffer, chunk by chunk as the checkpointer reads files, in interleaved rounds (the order shuffled in
each round) in one process, beside a write of the buffer to a file (with and without fsync) and reads of it
back (from the page cache, and cold after the file's pages are dropped with posix_fadvise). The machine is
shared and noisy: compare the columns of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable

CHUNK = 8 << 20  # what engine/runtime/checkpoint.py reads at a time


def crc32(buf: memoryview) -> None:
    """zlib.crc32 over the buffer, chunk by chunk."""
    c = 0
    for i in range(0, len(buf), CHUNK):
        c = zlib.crc32(buf[i : i + CHUNK], c)


def adler32(buf: memoryview) -> None:
    """zlib.adler32 over the buffer, chunk by chunk."""
    c = 1
    for i in range(0, len(buf), CHUNK):
        c = zlib.adler32(buf[i : i + CHUNK], c)


def hashlib_fn(name: str) -> Callable[[memoryview], None]:
    """A hashlib algorithm over the buffer, chunk by chunk."""

    def run(buf: memoryview) -> None:
        h = hashlib.new(name)
        for i in range(0, len(buf), CHUNK):
            h.update(buf[i : i + CHUNK])
        h.digest()

    return run


def write(path: str, buf: memoryview, sync: bool) -> None:
    """Write the buffer to a new file in chunks (fsync'd to the device when `sync`)."""
    if os.path.exists(path):
        os.remove(path)  # a checkpoint file is always new: no truncation of the old one in the timing
    with open(path, "wb", buffering=0) as f:
        for i in range(0, len(buf), CHUNK):
            f.write(buf[i : i + CHUNK])
        if sync:
            os.fsync(f.fileno())


def flush(path: str) -> None:
    """Push a file's dirty pages to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str, cold: bool) -> None:
    """Read the file back in chunks; `cold` drops its pages from the page cache first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if cold:
            os.fsync(fd)  # dirty pages cannot be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, CHUNK):
            pass
    finally:
        os.close(fd)


def main() -> None:
    """Time every candidate and the I/O in interleaved rounds; print s/GB and the ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=384, help="buffer size in MB (default 384)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--dir", default=tempfile.gettempdir(), help="where the I/O file goes (default: tmp)")
    a = p.parse_args()

    buf = memoryview(os.urandom(a.mb << 20))
    gb = len(buf) / 1e9
    path = os.path.join(a.dir, f"bench_checksum.{os.getpid()}.bin")
    hashes: dict[str, Callable[[], None]] = {
        "zlib.crc32": lambda: crc32(buf),
        "zlib.adler32": lambda: adler32(buf),
    }
    for name in sorted(hashlib.algorithms_guaranteed):
        if not name.startswith("shake"):  # variable-length digests: same core as sha3
            hashes[f"hashlib.{name}"] = (lambda fn: lambda: fn(buf))(hashlib_fn(name))
    io_ops: dict[str, Callable[[], None]] = {
        "write (page cache)": lambda: write(path, buf, sync=False),
        "write + fsync": lambda: write(path, buf, sync=True),
        "read (page cache)": lambda: read(path, cold=False),
        "read (cold)": lambda: read(path, cold=True),
    }
    # The reads need the file: the writes go first in every round, the rest is shuffled.
    times: dict[str, list[float]] = {k: [] for k in [*io_ops, *hashes]}
    rng = random.Random(0)
    try:
        for _ in range(a.rounds):
            order = list(hashes) + ["read (page cache)", "read (cold)"]
            rng.shuffle(order)
            for name in ["write (page cache)", "write + fsync", *order]:
                fn = io_ops.get(name) or hashes[name]
                t0 = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t0) / gb)
                if name == "write (page cache)":
                    flush(path)  # untimed: its writeback must not slow down what runs next
    finally:
        if os.path.exists(path):
            os.remove(path)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.mb} MB random buffer, {CHUNK >> 20} MiB chunks, {a.rounds} interleaved rounds, I/O in {a.dir}")
    print("median s/GB; ratio = checksum time / I/O time for the same bytes\n")
    print(f"{'':<22}{'s/GB':>8}{'GB/s':>8}")
    for k in io_ops:
        print(f"{k:<22}{med[k]:>8.3f}{1 / med[k]:>8.2f}")
    w, ws, r, rc = (med[k] for k in io_ops)
    print()
    head = f"{'checksum':<22}{'s/GB':>8}{'GB/s':>8}{'/write':>9}{'/w+fsync':>10}{'/read':>8}{'/cold rd':>10}"
    print(head)
    for k in sorted(hashes, key=med.__getitem__):
        s = med[k]
        print(f"{k:<22}{s:>8.3f}{1 / s:>8.2f}{s / w:>9.2f}{s / ws:>10.2f}{s / r:>8.2f}{s / rc:>10.2f}")


if __name__ == "__main__":
    main()
