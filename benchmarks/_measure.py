"""Timing and memory helpers shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from mkdt_bench.standin import device_standin


def peak_rss_mib() -> float:
    """Peak resident set of this process so far: ``VmHWM`` on Linux (the high-water mark of
    this program's own memory; ``ru_maxrss`` of a child started by a large process starts
    at the parent's size), else ``ru_maxrss`` (macOS reports bytes)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def add_device_arg(p: argparse.ArgumentParser) -> None:
    """``--device``: where a script measures."""
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda, cuda:N, or meta (the CUDA stand-in: shapes only)")


def run_measurement(args: argparse.Namespace,
                    measure: Callable[[argparse.Namespace, torch.device], dict[str, Any]]
                    ) -> dict[str, Any]:
    """``measure(args, device)`` on ``--device``, printed as one JSON line and returned."""
    with on_device(args.device) as device:
        result = measure(args, device)
    print(json.dumps(result))
    return result


@contextmanager
def on_device(name: str) -> Iterator[torch.device]:
    """The device ``--device`` names; ``meta`` runs the script on the CUDA stand-in
    (``mkdt_bench.standin``): shapes and device placement only, timings meaningless."""
    if name == "meta":
        with device_standin("meta") as standin:
            yield standin.device
    else:
        yield torch.device(name)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


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


def add_student_args(p: argparse.ArgumentParser) -> None:
    """The ConvNet student and its data: ``--width``, ``--resolution``, ``--dim``."""
    p.add_argument("--width", type=int, default=128, help="ConvNet width")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--dim", type=int, default=512, help="target representation size D")


def add_unroll_args(p: argparse.ArgumentParser, images_flag: str = "--images") -> None:
    """One MKDT iteration's problem (spec ``mkdt.md`` §4): synthetic images, ``--syn-steps``
    N and ``--batch-syn``."""
    p.add_argument(images_flag, type=int, default=100, help="synthetic images |S|")
    p.add_argument("--syn-steps", type=int, default=10, help="inner steps N")
    p.add_argument("--batch-syn", type=int, default=100, help="inner mini-batch size")
