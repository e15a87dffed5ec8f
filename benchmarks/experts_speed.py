"""Time expert training (spec ``mkdt.md`` §2) one by one and in vmapped groups; print JSON.

Trains ``--experts`` experts for ``--epochs`` epochs on random images and targets, first
one after another (``train_expert``, the reference path) and then in groups of each
``--groups`` size (``train_experts``), and reports seconds per expert-epoch, the ratio to
the sequential time and the largest difference between the grouped and sequential
trajectories. ``--heap retained`` runs everything inside ``retained_heap`` (see
``mkdt_bench/allocator.py``).

Example::

    OMP_NUM_THREADS=1 python benchmarks/experts_speed.py --images 5000 --batch 256 \\
        --experts 4 --groups 2,4
"""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

import torch
from _measure import add_device_arg, add_student_args, device_name, run_measurement, sync

from mkdt_bench.allocator import retained_heap
from mkdt_bench.methods._experts import EXPERT_DEFAULTS, train_expert, train_experts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5000, help="training images")
    p.add_argument("--batch", type=int, default=256, help="expert_batch")
    p.add_argument("--experts", type=int, default=4, help="experts per measurement")
    p.add_argument("--groups", default="2,4", help="group sizes, comma-separated")
    p.add_argument("--epochs", type=int, default=1, help="train_epochs")
    add_student_args(p)
    p.add_argument("--heap", default="default", choices=("default", "retained"),
                   help="glibc heap during training")
    add_device_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_measurement(parse_args(argv), measure)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.resolution, args.resolution, generator=g)
    targets = torch.randn(args.images, args.dim, generator=g)
    cfg = dict(EXPERT_DEFAULTS, width=args.width, expert_batch=args.batch,
               train_epochs=args.epochs, num_experts=args.experts)
    expert_epochs = args.experts * args.epochs
    heap = retained_heap() if args.heap == "retained" else contextlib.nullcontext()
    result: dict[str, Any] = {
        "images": args.images, "batch": args.batch, "experts": args.experts,
        "epochs": args.epochs, "width": args.width, "resolution": args.resolution,
        "heap": args.heap, "device": str(device), "device_name": device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }

    def timed(fn: Any) -> tuple[float, Any]:
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        return (time.perf_counter() - start) / expert_epochs, out

    with heap:
        seconds, sequential = timed(lambda: [train_expert(cfg, i, images, targets, device)
                                             for i in range(args.experts)])
        result["sequential_seconds_per_expert_epoch"] = round(seconds, 3)
        for size in map(int, args.groups.split(",")):
            chunks = [list(range(args.experts))[i:i + size] for i in range(0, args.experts, size)]
            grouped_s, grouped = timed(lambda chunks=chunks: [
                t for chunk in chunks for t in train_experts(cfg, chunk, images, targets, device)])
            diff = max((a - b).abs().max().item() for a, b in zip(grouped, sequential))
            result[f"group_{size}"] = {"seconds_per_expert_epoch": round(grouped_s, 3),
                                       "ratio_to_sequential": round(grouped_s / seconds, 3),
                                       "max_abs_difference": diff}
    return result


if __name__ == "__main__":
    main()
