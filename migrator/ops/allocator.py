"""Keeping a long run's memory from creeping: glibc arenas, and giving freed memory back.

A run reads, renders and verifies one database after another: buffers of a
few hundred KB to tens of MB, allocated and freed thousands of times by
several threads. Python frees them all (the live heap is flat: measured with
tracemalloc, 66 MB over 10 databases and 68 MB over 2,000), but glibc keeps
much of what was freed, in one arena per thread, fragmented.

:func:`tune` caps the arenas at 2; :func:`trim` hands free heap pages back to
the kernel. Elsewhere than glibc both do nothing. Measured: peak RSS over
10,000 databases 173 MB instead of 188 MB, no measurable cost in speed.
(Fixing the mmap threshold as well kept RSS lower still, but every large
buffer then cost an mmap, page faults and an munmap: system CPU time doubled
and the 4096-dim ceiling fell by a quarter; see docs/BENCHMARKS.md.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8
ARENA_MAX = 2

_libc = None


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                lib.mallopt  # noqa: B018 - glibc (and not musl) has both
                lib.malloc_trim  # noqa: B018
                _libc = lib
            except (OSError, AttributeError):
                pass
    return _libc or None


def tune() -> bool:
    """Apply the settings; True when they took effect (glibc)."""
    lib = _glibc()
    if lib is None:
        return False
    return bool(lib.mallopt(M_ARENA_MAX, ARENA_MAX))


def trim() -> None:
    """Give free heap memory back to the kernel (cheap: about a millisecond)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)
