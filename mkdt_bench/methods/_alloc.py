"""Keep freed CPU memory inside the process while the MKDT inner loop runs.

Every inner step allocates and frees activation tensors of tens to hundreds of MB. glibc
serves such blocks with ``mmap`` and returns them with ``munmap``, so each new tensor
page-faults all its pages again: on the CPU that was about 40 % of an MKDT iteration
(``benchmarks/README.md``). :func:`retained_heap` turns ``mmap`` off and raises the trim
threshold for its duration, so freed blocks are reused without faults, then restores
glibc's defaults and trims the heap. Numerics are untouched. A no-op without glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: glibc's defaults (``DEFAULT_TRIM_THRESHOLD``, ``DEFAULT_MMAP_MAX``).
DEFAULT_TRIM_THRESHOLD = 128 * 1024
DEFAULT_MMAP_MAX = 65536


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


@contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Within the block, freed memory stays in the heap for reuse (see the module doc)."""
    libc = _libc() if enabled else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
        libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)

