"""Peak memory of a block of work, for the budget columns (stored in cache manifests)."""

from __future__ import annotations

import os
import resource
import sys
import threading
from types import TracebackType

import torch

_STATM = "/proc/self/statm"


def rss_mib() -> float:
    """The process's resident set now (Linux ``/proc``), else its lifetime peak."""
    try:
        with open(_STATM) as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.result()``: the peak resident set of the
    process during the block (sampled every ``interval`` seconds; it includes what the
    process already held) and, when CUDA is initialised, ``torch.cuda.max_memory_allocated``
    over the block."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._cuda = torch.cuda.is_available() and torch.cuda.is_initialized()

    def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, rss_mib())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
        self.peak_rss = rss_mib()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, rss_mib())

    def result(self) -> dict[str, float]:
        """``{"peak_rss_mib": ..., "peak_cuda_mib": ...}`` (the latter with CUDA only)."""
        out = {"peak_rss_mib": round(self.peak_rss, 1)}
        if self._cuda or (torch.cuda.is_available() and torch.cuda.is_initialized()):
            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return out
