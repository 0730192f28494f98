"""Host memory on CPU runs: glibc's malloc kept from handing a step's freed memory back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

MMAP_THRESHOLD = 32 << 20  # glibc's largest: allocations up to 32 MiB come from the heap, not from mmap
TRIM_THRESHOLD = 1 << 30  # free memory at the top of the heap that glibc keeps before returning it


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a training step frees, for the next step to reuse (CPU tensors).

    By default glibc maps allocations above a threshold that adapts (128 KiB up to 32 MiB) and hands memory back
    to the system once more than twice that is free at the top of the heap. A step's activations are freed and
    allocated again every step, so each step faulted in tens of thousands of fresh zeroed pages again (20k
    minor faults per step of a ViT-S SALT student; none with this setting). Fixing the thresholds keeps them.
    Once per process; False where the C library is not glibc (nothing changes there).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))
