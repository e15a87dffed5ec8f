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


#: The blocks open in this process, outermost first (a stage may produce another inside).
_OPEN: list[PeakMemory] = []


def _cuda_device() -> int | None:
    """The current CUDA device once CUDA is in use in this process (the unit's device:
    ``mkdt_bench.device.configure`` makes it current), else None."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.current_device()
    return None


class PeakMemory:
    """``with PeakMemory() as m: ...`` then ``m.result()``: the peak resident set of the
    process during the block (sampled every ``interval`` seconds; it includes what the
    process already held) and, once CUDA is in use, the peak of
    ``torch.cuda.max_memory_allocated`` on the current device over the block.

    Blocks nest: CUDA's peak counter is reset when a block opens, after its value so far
    has been credited to every open block, and credited again when a block closes, so an
    inner block (a stage produced inside another) does not erase its parent's peak.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss = 0.0
        self.peak_cuda: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, rss_mib())
            if self._stop.wait(self.interval):
                return

    @staticmethod
    def _credit() -> int | None:
        """The device's peak since the last reset, credited to every open block."""
        device = _cuda_device()
        if device is not None:
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            for block in _OPEN:
                block.peak_cuda = max(block.peak_cuda or 0.0, peak)
        return device

    def __enter__(self) -> PeakMemory:
        device = self._credit()
        if device is not None:
            torch.cuda.reset_peak_memory_stats(device)
        _OPEN.append(self)
        self.peak_rss = rss_mib()
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_rss = max(self.peak_rss, rss_mib())
        self._credit()
        _OPEN.remove(self)

    @property
    def peak_mib(self) -> float:
        """The block's peak memory: the GPU's where it used one, else the resident set."""
        return self.peak_cuda if self.peak_cuda is not None else self.peak_rss

    def result(self) -> dict[str, float]:
        """``{"peak_rss_mib": ..., "peak_cuda_mib": ...}`` (the latter once CUDA is used)."""
        out = {"peak_rss_mib": round(self.peak_rss, 1)}
        if self.peak_cuda is not None:
            out["peak_cuda_mib"] = round(self.peak_cuda, 1)
        return out
