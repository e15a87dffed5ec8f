"""Timing and memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable

import torch


def peak_rss_mib() -> float:
    """Peak resident set of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], None], warmup: int, repeats: int,
               device: torch.device) -> tuple[float, float, str]:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones, and
    the peak memory: ``torch.cuda.max_memory_allocated`` over the timed calls on a GPU; on
    the CPU the growth of the peak resident set from before the first call (what one call's
    graph needs, as it is freed after every backward pass)."""
    rss_before = peak_rss_mib()
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    if device.type == "cuda":
        return seconds, torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return seconds, peak_rss_mib() - rss_before, "ru_maxrss_growth"
