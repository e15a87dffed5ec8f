"""Time KRR-ST outer steps (spec ``krrst.md`` §2.9) on random data; print JSON.

One outer step = augment a real batch, the teacher's targets and the pool model's features
of it, the features of the learned set with gradient, the ridge solve, the backward pass
into images and targets, the Adam update and the pool model's online SGD step. The data
are random: the cost does not depend on their values. Pool models get one warm-up step
each (the warm-up is a one-off cost, not timed).

``--teacher-views V`` times the opt-in ``teacher_views`` mode instead: the V views of every
real image and their teacher targets are precomputed once (timed on its own,
``precompute_seconds``; ``--real-images`` sets how many images that covers), and a step
rebuilds its augmented batch from the stored views: no teacher forward. ``--teacher-views
0,4`` times both round robin in one process (median of ``--rounds``; no peak memory).

Peak memory: ``torch.cuda.max_memory_allocated`` over the timed steps on a GPU; on the CPU
the growth of the process's peak resident set from just before the first step.

Example::

    python benchmarks/krrst_speed.py --images 1000 --real-batch 1024 --width 128 \\
        --resolution 32 --teacher resnet18-teacher [--teacher-views 4 --real-images 5000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _measure import add_device_arg, device_name, run_measurement, sync, time_calls
from torch import nn

from mkdt_bench.allocator import retained_heap
from mkdt_bench.cache import ArtifactCache
from mkdt_bench.device import resident
from mkdt_bench.methods import MethodContext, create_method
from mkdt_bench.teachers.encoder import build_teacher


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="learned images N")
    p.add_argument("--real-batch", type=int, default=1024, help="real batch B")
    p.add_argument("--width", type=int, default=128, help="pool ConvNet width")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--teacher", default="resnet18-teacher", help="teacher model name")
    p.add_argument("--pool-size", type=int, default=10, help="pool models P")
    p.add_argument("--steps", type=int, default=3, help="timed outer steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed outer steps first")
    add_device_arg(p)
    p.add_argument("--teacher-channels-last", type=int, default=1, choices=(0, 1),
                   help="krrst option teacher_channels_last (1: as krrst runs by default; "
                        "0 with --heap default: the reference-style step)")
    p.add_argument("--heap", default="retained", choices=("retained", "default"),
                   help="glibc heap during the steps: retained (what krrst does on the CPU, "
                        "mkdt_bench/allocator.py) or default (the reference-style run)")
    p.add_argument("--teacher-views", default="0",
                   help="krrst option teacher_views (0: the faithful step); several, "
                        "comma-separated, are timed round robin in one process (median)")
    p.add_argument("--rounds", type=int, default=3,
                   help="round-robin rounds of --steps steps each (several --teacher-views)")
    p.add_argument("--real-images", type=int, default=0,
                   help="random real images (0: 2 x max(images, real batch)); with "
                        "--teacher-views, what the precompute covers; a multiple of "
                        "--real-batch keeps every timed batch full (a pass's last batch is "
                        "the remainder)")
    return p.parse_args(argv)


class _Shape:
    """What ``build_teacher`` reads of a data set."""

    def __init__(self, resolution: int) -> None:
        self.channels, self.image_size = 3, resolution


def _stepper(args: argparse.Namespace, ctx: MethodContext, teacher: nn.Module,
             views: int) -> tuple[Callable[[], None], float]:
    """One krrst outer step as a call, on its own state, and the seconds of the one-time
    views precompute (0 for the faithful step, ``views`` = 0)."""
    method = create_method("krrst", width=args.width, pool_size=args.pool_size,
                           online_iterations=2, real_batch=args.real_batch,
                           outer_steps=args.warmup + args.steps * args.rounds,
                           teacher_channels_last=bool(args.teacher_channels_last),
                           teacher_views=views)
    stored, precompute = None, 0.0
    if views:
        start = time.perf_counter()
        stored = method._views(ctx)
        sync(ctx.device)
        precompute = time.perf_counter() - start
    else:
        teacher = method._teacher(ctx, teacher)  # channels-last copy on the CPU, as krrst
    state = method._initial_state(ctx)
    mean = torch.zeros(1, 3, 1, 1, device=ctx.device)
    std = torch.ones(1, 3, 1, 1, device=ctx.device)
    images = resident(ctx.images, ctx.device)  # as krrst keeps them

    def outer_step() -> None:
        method._step(ctx, teacher, state, mean, std, stored, images)
        state.step += 1

    return outer_step, precompute


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_measurement(parse_args(argv), measure)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    modes = [int(v) for v in args.teacher_views.split(",")]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    teacher = build_teacher(args.teacher, _Shape(args.resolution)).to(device).eval()
    n_real = args.real_images or max(args.real_batch, args.images) * 2
    images = torch.randn(n_real, 3, args.resolution, args.resolution, generator=g)
    with torch.no_grad():
        dim = int(teacher.features(images[:2].to(device)).shape[1])
    targets = torch.randn(n_real, dim, generator=g)
    result: dict[str, Any] = {
        "images": args.images, "real_batch": args.real_batch, "width": args.width,
        "resolution": args.resolution, "teacher": args.teacher, "target_dim": dim,
        "pool_size": args.pool_size, "steps": args.steps, "heap": args.heap,
        "teacher_channels_last": bool(args.teacher_channels_last),
        "teacher_views": modes if len(modes) > 1 else modes[0], "real_images": n_real,
    }
    with tempfile.TemporaryDirectory() as tmp:
        ctx = MethodContext(source="random", images=images, targets=targets,
                            mean=(0.0,) * 3, std=(1.0,) * 3, budget=args.images, seed=0,
                            device=device, cache=ArtifactCache(Path(tmp)), inputs_key="random",
                            scratch=Path(tmp), load_teacher=lambda: teacher)
        steppers = {v: _stepper(args, ctx, teacher, v) for v in modes}
        precompute = {v: p for v, (_, p) in steppers.items() if v}
        with retained_heap(args.heap == "retained"):
            if len(modes) == 1:
                seconds, peak, kind = time_calls(steppers[modes[0]][0], args.warmup,
                                                 args.steps, device)
                result.update(seconds_per_outer_step=round(seconds, 4),
                              peak_memory_mib=round(peak, 1), memory_measure=kind)
            else:  # round robin, so that a loaded machine slows all alike
                times: dict[int, list[float]] = {v: [] for v in modes}
                for v in modes:
                    for _ in range(args.warmup):
                        steppers[v][0]()
                for _ in range(args.rounds):
                    for v in modes:
                        times[v].append(time_calls(steppers[v][0], 0, args.steps, device)[0])
                median = {v: statistics.median(t) for v, t in times.items()}
                result["seconds_per_outer_step"] = {str(v): round(t, 4)
                                                    for v, t in median.items()}
                result["time_ratio_to_first"] = {str(v): round(t / median[modes[0]], 3)
                                                 for v, t in median.items()}
    result["precompute_seconds"] = {str(v): round(p, 2) for v, p in precompute.items()}
    result["precompute_ms_per_image_view"] = {
        str(v): round(1000 * p / (n_real * v), 3) for v, p in precompute.items()}
    result.update(device=str(device), device_name=device_name(device),
                  threads=torch.get_num_threads(), torch=torch.__version__)
    return result


if __name__ == "__main__":
    main()
