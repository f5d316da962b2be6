"""Keep the memory NumPy frees for its next arrays, instead of handing it back to the OS.

A training step allocates and frees tens of megabytes of temporaries (activations, im2col blocks,
gradients). glibc's malloc returns large freed blocks to the OS (blocks above its mmap threshold,
and free space at the top of a heap above its trim threshold), so the next step gets fresh pages,
and every fresh page costs a page fault in which the kernel zeroes it; with two threads those
faults also contend for the process's memory map lock. Measured on the best spec's net (batch 128,
2 threads, AMD EPYC): about 5,400 page faults per step with the defaults, about 30 with the
settings below, and about 20% more images per second; peak RSS of those loops grew by under 5%.

So when a model first runs, cnnkit sets glibc's M_MMAP_THRESHOLD to 32 MiB (its maximum on 64-bit
systems; larger arrays are still mapped and unmapped) and M_TRIM_THRESHOLD to 1 GiB. Freed memory
stays with the process for reuse; peak memory is still set by the largest working set, plus any
fragmentation the kept memory adds.
This changes speed only, never results. It applies to the whole process, once, and stays: a
program that runs a model (training, ``predict``, ``evaluate``) keeps up to 1 GiB of freed memory
at the top of its heap instead of returning it. Outside Linux, or on another C library, it does
nothing. ``CNNKIT_MALLOC_TUNING=0`` (read when a run starts and at each model's first forward
pass) leaves malloc alone; ``1`` or unset tunes it; anything else is an error. Once tuned, malloc
stays tuned for the rest of the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

from ..errors import CnnkitError

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def wanted() -> bool:
    """Whether $CNNKIT_MALLOC_TUNING asks for the tuning (CnnkitError on a bad value)."""
    setting = os.environ.get("CNNKIT_MALLOC_TUNING", "1").strip() or "1"
    if setting not in ("0", "1"):
        raise CnnkitError(f"CNNKIT_MALLOC_TUNING must be 0 (leave malloc alone) or 1 (the default). Received: {os.environ['CNNKIT_MALLOC_TUNING']!r}")
    return setting == "1"


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above unless $CNNKIT_MALLOC_TUNING is 0; whether it is tuned."""
    return wanted() and _tune()


@functools.cache
def _tune() -> bool:
    """Once per process: once tuned, malloc stays tuned."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt  # glibc only (musl has none)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
