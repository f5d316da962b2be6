"""Settings derived from the machine: the CPU's cache sizes as the OS reports them.

cnnkit's stride-1 convolution works one block of images at a time, sized to stay in a core's L2
cache (``conv_blocks``). The right size depends on the CPU, so it is derived here from the L2 size
the OS reports (Linux: /sys/devices/system/cpu/cpu0/cache; elsewhere ``os.sysconf``), with a safe
fallback when neither answers. ``CNNKIT_BLOCK_BYTES`` overrides it.

Tuning changes speed, never results: the block size only decides how many whole images share a
block, and everything a block computes is summed image by image in the same order whatever the
block size (see ``conv_blocks``). Things that would change results (how an image too large for a
block is cut, im2col strategy per layer shape, the parts a batch is split into) are fixed
functions of the layer shape and thread count, the same on every machine.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..errors import CnnkitError

# L2 size assumed when the OS reports none: the smallest per-core L2 of current x86 server CPUs.
FALLBACK_L2 = 1024 * 1024
# The share of L2 a block's working set may fill (measured, see README "Speed"): smaller blocks
# leave more room for the weights and the other data passing through, but mean more blocks, and
# each costs Python work that holds the GIL.
L2_SHARE = 1.0
MIN_BLOCK, MAX_BLOCK = 256 * 1024, 4 * 1024 * 1024

_SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")


def _parse_size(text: str) -> int | None:
    text = text.strip().upper()
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    try:
        if text and text[-1] in units:
            return int(text[:-1]) * units[text[-1]]
        return int(text)
    except ValueError:
        return None


@functools.cache
def cache_sizes() -> dict[str, int]:
    """Per-core data cache sizes in bytes by name ("L1d", "L2", "L3"); only those the OS reports."""
    sizes: dict[str, int] = {}
    try:
        for index in sorted(_SYSFS.glob("index*")):
            kind = (index / "type").read_text().strip()
            if kind == "Instruction":
                continue
            size = _parse_size((index / "size").read_text())
            level = (index / "level").read_text().strip()
            if size:
                sizes[f"L{level}d" if kind == "Data" else f"L{level}"] = size
    except OSError:
        sizes = {}
    if not sizes and hasattr(os, "sysconf"):
        for name, key in (("L1d", "SC_LEVEL1_DCACHE_SIZE"), ("L2", "SC_LEVEL2_CACHE_SIZE"), ("L3", "SC_LEVEL3_CACHE_SIZE")):
            try:
                value = os.sysconf(key)
            except (ValueError, OSError):
                continue
            if value and value > 0:
                sizes[name] = value
    return sizes


@functools.cache
def cpu_model() -> str:
    """The CPU's model name as the OS reports it (what ``lscpu`` shows), or "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def fusion_enabled() -> bool:
    """``$CNNKIT_FUSE``: 1 (the default) runs runs of built-in layers as fused steps
    (``cnnkit.runtime.plan``); 0 runs every layer as itself, the plain reference path."""
    value = os.environ.get("CNNKIT_FUSE", "").strip()
    if value not in ("", "0", "1"):
        raise CnnkitError(f"CNNKIT_FUSE must be 0 or 1. Received: {value!r}")
    return value != "0"


def check_environment() -> None:
    """One CnnkitError for a bad CNNKIT_NUM_THREADS, CNNKIT_BLOCK_BYTES, CNNKIT_MALLOC_TUNING or CNNKIT_FUSE.
    Checked when a run starts and at a model's first forward pass, so a bad value is named as
    such, not as a failure of the first layer that reads it."""
    from . import allocator, parallel

    parallel.num_threads()
    block_bytes()
    allocator.wanted()
    fusion_enabled()


def block_bytes() -> int:
    """Working-set bytes per convolution block: ``$CNNKIT_BLOCK_BYTES``, else L2_SHARE of the L2."""
    value = os.environ.get("CNNKIT_BLOCK_BYTES", "").strip()
    if value:
        if not value.isdecimal() or int(value) < 1:
            raise CnnkitError(f"CNNKIT_BLOCK_BYTES must be a positive integer. Received: {value!r}")
        return int(value)
    return _derived_block_bytes()


@functools.cache
def _derived_block_bytes() -> int:
    l2 = cache_sizes().get("L2", FALLBACK_L2)
    return int(min(max(l2 * L2_SHARE, MIN_BLOCK), MAX_BLOCK))


def picks() -> dict[str, object]:
    """What was derived, and from what (``tools/bench.py`` prints it)."""
    sizes = cache_sizes()
    return {"cpu_model": cpu_model(), "caches": sizes, "l2_assumed": "L2" not in sizes, "block_bytes": block_bytes()}
