"""Handing freed heap memory back to the system between a run's stages."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from latentforge.memory import release_freed_memory


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's malloc_trim")
def test_release_freed_memory_returns_heap_pages_that_free_kept() -> None:
    if not release_freed_memory():
        pytest.skip("no glibc malloc_trim here")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    size = 100_000  # below glibc's mmap threshold: served from the heap
    blocks = [libc.malloc(size) for _ in range(2_500)]
    for b in blocks:
        libc.memset(b, 1, size)  # touched: resident
    for b in blocks[:-1]:  # the last block stays, on top of the heap, so the heap cannot shrink from its end
        libc.free(b)
    kept = _rss_mb()
    assert release_freed_memory()
    released = kept - _rss_mb()
    libc.free(blocks[-1])
    assert released > 150, f"only {released:.0f} MB of the ~250 MB freed below the top of the heap was given back"
