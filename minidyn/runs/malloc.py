"""Keep glibc's allocator from returning large buffers to the OS after every use.

On Linux, glibc serves allocations above ~128 KiB-32 MiB with fresh mmap calls and unmaps them
on free, so every forward/backward of a CNN on the CPU page-faults its activations in again
(~10k faults per cnn4 forward+backward at batch 128). Keeping freed memory in the heap instead
(no mmap for large blocks, never trim, grow the heap 256 MiB at a time) made PGD-10 take about
0.6x the time on 2 cores (benchmarks/malloc.py measures it). Memory that was used once stays
reserved by the process, which is the usual trade of caching allocators.

Opt out with MINIDYN_MALLOC_TUNING=0.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4


def tune_glibc_malloc(top_pad: int = 256 << 20) -> bool:
    """Apply the settings in-process; True if applied (Linux with glibc, not opted out)."""
    if os.environ.get("MINIDYN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1), (M_TOP_PAD, top_pad)))
