"""Time KRR-ST outer steps (spec ``krrst.md`` §2.9) on random data; print JSON.

One outer step = augment a real batch, the teacher's targets and the pool model's features
of it, the features of the learned set with gradient, the ridge solve, the backward pass
into images and targets, the Adam update and the pool model's online SGD step. The data
are random: the cost does not depend on their values. Pool models get one warm-up step
each (the warm-up is a one-off cost, not timed).

Peak memory: ``torch.cuda.max_memory_allocated`` over the timed steps on a GPU; on the CPU
the growth of the process's peak resident set from just before the first step.

Example::

    python benchmarks/krrst_speed.py --images 1000 --real-batch 1024 --width 128 \\
        --resolution 32 --teacher resnet18-teacher
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from _measure import time_calls

from mkdt_bench.cache import ArtifactCache
from mkdt_bench.methods import MethodContext, create_method
from mkdt_bench.methods._alloc import retained_heap
from mkdt_bench.teacher import build_teacher


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
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--teacher-channels-last", type=int, default=1, choices=(0, 1),
                   help="krrst option teacher_channels_last (1: as krrst runs by default; "
                        "0 with --heap default: the reference-style step)")
    p.add_argument("--heap", default="retained", choices=("retained", "default"),
                   help="glibc heap during the steps: retained (what krrst does on the CPU, "
                        "mkdt_bench/methods/_alloc.py) or default (the reference-style run)")
    return p.parse_args(argv)


class _Shape:
    """What ``build_teacher`` reads of a data set."""

    def __init__(self, resolution: int) -> None:
        self.channels, self.image_size = 3, resolution


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    args = parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    teacher = build_teacher(args.teacher, _Shape(args.resolution)).to(device).eval()
    n_real = max(args.real_batch, args.images) * 2
    images = torch.randn(n_real, 3, args.resolution, args.resolution, generator=g)
    with torch.no_grad():
        dim = int(teacher.features(images[:2].to(device)).shape[1])
    targets = torch.randn(n_real, dim, generator=g)
    method = create_method("krrst", width=args.width, pool_size=args.pool_size,
                           online_iterations=2, real_batch=args.real_batch,
                           outer_steps=args.warmup + args.steps,
                           teacher_channels_last=bool(args.teacher_channels_last))
    with tempfile.TemporaryDirectory() as tmp:
        ctx = MethodContext(source="random", images=images, targets=targets,
                            mean=(0.0,) * 3, std=(1.0,) * 3, budget=args.images, seed=0,
                            device=device, cache=ArtifactCache(Path(tmp)), inputs_key="random",
                            scratch=Path(tmp), load_teacher=lambda: teacher)
        teacher = method._teacher(ctx, teacher)  # channels-last copy on the CPU, as krrst
        state = method._initial_state(ctx)
        mean = torch.zeros(1, 3, 1, 1, device=device)
        std = torch.ones(1, 3, 1, 1, device=device)

        def outer_step() -> None:
            method._step(ctx, teacher, state, mean, std)
            state.step += 1

        with retained_heap(args.heap == "retained"):
            seconds, peak, kind = time_calls(outer_step, args.warmup, args.steps, device)
    result = {
        "seconds_per_outer_step": round(seconds, 4), "peak_memory_mib": round(peak, 1),
        "memory_measure": kind, "images": args.images, "real_batch": args.real_batch,
        "width": args.width, "resolution": args.resolution, "teacher": args.teacher,
        "target_dim": dim, "pool_size": args.pool_size, "steps": args.steps, "heap": args.heap,
        "teacher_channels_last": bool(args.teacher_channels_last),
        "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
