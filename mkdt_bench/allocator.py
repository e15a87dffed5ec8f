"""Keep freed CPU memory inside the process while a unit of work runs.

torch takes every CPU tensor buffer from ``malloc`` and gives it back on ``free``. glibc
serves blocks above its mmap threshold (at most 32 MiB by its own dynamic rule) with
``mmap`` and returns them with ``munmap``, so each new activation tensor of tens to hundreds
of MB page-faults all its pages again: about 40 % of an MKDT iteration on the CPU, and as
much of a teacher's or an encoder's training step at batch 256 (``benchmarks/README.md``).
:func:`retained_heap` turns ``mmap`` off and raises the trim threshold for its duration, so
freed blocks are reused without faults, then restores glibc's defaults and trims the heap.
Blocks nest: only the outermost one changes the settings. Every unit of a run on the CPU
runs inside one (``mkdt_bench/pipeline/executors.py``). Numerics are untouched. A no-op
without glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: glibc's defaults (``DEFAULT_TRIM_THRESHOLD``, ``DEFAULT_MMAP_MAX``).
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536

_lock = threading.Lock()
_depth = 0  # open retained_heap blocks in this process


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


def retained() -> bool:
    """Whether this process is inside a :func:`retained_heap` block."""
    return _depth > 0


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Within the block, freed memory stays in the heap for reuse (see the module doc)."""
    global _depth
    libc = _libc() if enabled else None
    if libc is None:
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
