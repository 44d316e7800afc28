"""Keep freed activation buffers for reuse (glibc only).

A forward pass over a batch of long texts allocates tens of MB per layer output (32 texts x 256 tokens x 1,536
fp32 values = 50 MB). glibc serves blocks above its mmap threshold (at most 32 MB) with a fresh mmap and unmaps
them when freed, so every such buffer is page-faulted in again on every layer: on all-MiniLM-L6-v2's long-text
batches that was ~15-30% of the torch fp32 forward and more of the AMX one (benchmarks/README.md). Telling glibc
to serve large blocks from its heap and to keep up to RETAIN bytes of freed heap makes those buffers reused.
The cost: the process keeps up to RETAIN bytes it no longer uses instead of returning them to the OS.

Applied once per process by the first CPU `encode`; set ENCODERKIT_MALLOC=system to leave glibc's defaults."""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc malloc.h
RETAIN = 1 << 30  # freed heap kept before glibc trims it back to the OS
_done: bool | None = None


def retain_freed_memory() -> bool:
    """Apply the setting once (glibc on Linux); whether it is in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if platform.system() != "Linux" or os.environ.get("ENCODERKIT_MALLOC", "").lower() == "system":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, RETAIN))
    except (OSError, AttributeError) as e:
        log.debug("mallopt unavailable: %s", e)
    return _done
