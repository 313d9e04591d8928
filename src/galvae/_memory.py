"""Keep a long streaming pass from growing the heap.

glibc's malloc serves an allocation above its mmap threshold with mmap, and returns it to the system
when freed; but after each such free it raises the threshold (up to 32 MB), so the 16 MB batch and
block arrays of a streamed pass soon come from the heap instead, where small long-lived allocations
between them keep the freed memory from ever being returned: encoding 320k spectra grew to 5 GB.
Fixing the threshold at 4 MiB (which also stops the adjustment) keeps the resident memory flat; the
trim threshold, no longer adjusted either, is raised so that the heap is not shrunk and regrown with
every training batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers, from glibc's malloc.h
MMAP_THRESHOLD = 4 << 20   # bytes: above a training batch (128 × 4000 × 4 B = 2 MB), below a block (16 MB)
TRIM_THRESHOLD = 128 << 20  # free heap kept for reuse: trimming it after every batch costs page faults

_done = False


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold (once per process); False where the C library is not glibc."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to set
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
