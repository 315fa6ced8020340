"""Keep freed memory in the heap, so the data plane's big buffers are reused, not re-faulted.

glibc's malloc hands out blocks above its mmap threshold as fresh mappings and
gives the heap's free top back to the kernel once it passes the trim
threshold. Both thresholds move with the program's history, so whether a
stream link's 64-256 KiB frames (thousands a second: a TUN read, the joined
plaintext, the ciphertext) are reused or re-faulted page by page depends on
heap layout alone. Measured on the 2-core benchmark machine, when they were
re-faulted: the sender's kernel time rose from 0.5 to 1.2 s per GB and 4-stream
TCP fell from 6.6 to 4.0 Gbit/s. Fixed thresholds make the fast case the only
case, at the price of up to `TRIM_THRESHOLD` of freed memory kept.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Mapping
from typing import Final

log = logging.getLogger("gossipmesh")

M_TRIM_THRESHOLD: Final = -1
M_MMAP_THRESHOLD: Final = -3
"""mallopt(3) parameter numbers (glibc's malloc.h)."""

MMAP_THRESHOLD: Final = 1 << 20
"""Blocks up to 1 MiB come from the heap (a link frame is at most 256 KiB plus its tag)."""
TRIM_THRESHOLD: Final = 16 << 20
"""Up to 16 MiB of free heap top is kept rather than returned and faulted in again."""


def user_tuned_malloc(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the operator set malloc's thresholds themselves (theirs win)."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    return (
        "glibc.malloc.trim_threshold" in tunables
        or "glibc.malloc.mmap_threshold" in tunables
        or "MALLOC_TRIM_THRESHOLD_" in environ
        or "MALLOC_MMAP_THRESHOLD_" in environ
    )


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds; False where there is no glibc mallopt (only slower there)."""
    if user_tuned_malloc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    kept = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
    kept = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1) and kept
    if not kept:
        log.debug("mallopt refused the heap thresholds; big buffers may be re-faulted")
    return kept
