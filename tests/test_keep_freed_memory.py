"""The trainer's malloc setting on CPU (engine/runtime/malloc.py `keep_freed_memory`): memory a step frees
stays with the process, so the next step's allocations of the same sizes fault in no fresh pages."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO, env

STEPS = """
import resource, sys
import numpy as np
if sys.argv[1] == "on":
    import ctypes, ctypes.util
    from engine.runtime.malloc import keep_freed_memory
    glibc = hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "gnu_get_libc_version")
    assert keep_freed_memory() == glibc == keep_freed_memory()  # tuned where glibc is, once per process
    if not glibc:  # another C library: nothing was tuned, and nothing to measure
        sys.exit(print("not glibc"))
faults = []
for _ in range(6):  # a "step": 30 activations of 4 MiB, written, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1 << 20, np.float32) for _ in range(30)]
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _faults(mode: str) -> list[int]:
    out = subprocess.run(
        [sys.executable, "-c", STEPS, mode], cwd=REPO, env=env(), capture_output=True, text=True, check=True
    )
    return [] if out.stdout.strip() == "not glibc" else [int(x) for x in out.stdout.split()]


def test_freed_step_memory_is_reused_without_page_faults() -> None:
    on = _faults("on")
    if not on:  # not glibc: keep_freed_memory said so and changed nothing (asserted in the child)
        return
    off = _faults("off")
    pages = 30 * (4 << 20) // 4096
    assert on[0] > pages // 4  # the first step faults its memory in
    assert max(on[1:]) < pages // 100, on  # later steps reuse it
    assert min(off[1:]) > pages // 4, off  # glibc's defaults hand it back and fault it in again every step
