"""Time the teacher's training (spec ``mkdt.md`` §1) over ``--images`` images; print
JSON with the seconds per batch and the epoch over ``--epoch-images`` images it implies.

One epoch on random uint8 images, made by the teacher kind ``--kind`` of
``mkdt_bench.teachers.TEACHERS`` as the teacher stage makes it. ``ssl``: lightly's Barlow Twins
views made by the DataLoader (worker processes and pinned memory on a GPU,
``mkdt_bench.teachers.training.loader_options``), the teacher and its projector, SGD.
``supervised``: the labelled proxy of ``cifar10-cpu-v2`` (crop + flip, cross-entropy, SGD).
The time includes building the encoder, the loader's start and the epoch's snapshot, as in a
real epoch. ``--heap retained`` runs
it inside ``mkdt_bench.allocator.retained_heap``, as a run does on the CPU; ``default`` in
glibc's default heap.

Examples::

    python benchmarks/teacher_speed.py --images 5120 --batch 256 --device cuda
    python benchmarks/teacher_speed.py --kind supervised --arch convnet:width=64 \\
        --images 10240 --heap default
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _measure import add_device_arg, device_name, run_measurement, sync

from mkdt_bench.allocator import retained_heap
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.progress import Progress
from mkdt_bench.teachers import TEACHER_CHOICES, TEACHER_DEFAULTS, teacher_kind
from mkdt_bench.teachers.training import loader_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=5120, help="training images timed")
    p.add_argument("--batch", type=int, default=256, help="teacher.batch_size")
    p.add_argument("--arch", default="resnet18-teacher", help="teacher.arch")
    p.add_argument("--proj-dim", type=int, default=2048, help="teacher.proj_dim")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--epoch-images", type=int, default=50_000,
                   help="images of the epoch to estimate (CIFAR: 50,000)")
    p.add_argument("--kind", default="ssl", choices=TEACHER_CHOICES["kind"], help="teacher.kind")
    p.add_argument("--heap", default="retained", choices=("retained", "default"),
                   help="glibc heap on the CPU: retained (as a run) or glibc's default")
    add_device_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_measurement(parse_args(argv), measure)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    shape = (args.images, 3, args.resolution, args.resolution)
    images = torch.randint(256, shape, generator=g, dtype=torch.uint8)
    labels = torch.randint(10, (args.images,), generator=g)
    dataset = ImageDataset("random", images, labels, images[:1], labels[:1],
                           [str(c) for c in range(10)], (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    cfg = dict(TEACHER_DEFAULTS, kind=args.kind, arch=args.arch, epochs=1,
               batch_size=args.batch, proj_dim=args.proj_dim)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    heap = retained_heap(args.heap == "retained" and device.type == "cpu")
    with tempfile.TemporaryDirectory() as scratch, heap:
        sync(device)
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_SELF)
        teacher_kind(cfg).make(dataset, cfg, Path(scratch), device, Progress(False))
        sync(device)
        seconds = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    batches = args.images // args.batch
    per_batch = seconds / batches
    result = {
        "kind": args.kind, "heap": args.heap,
        "system_cpu_seconds": round(after.ru_stime - before.ru_stime, 1),
        "minor_page_faults": after.ru_minflt - before.ru_minflt,
        "images": args.images, "batch": args.batch, "arch": args.arch,
        "proj_dim": args.proj_dim, "resolution": args.resolution, "batches": batches,
        "seconds": round(seconds, 3), "seconds_per_batch": round(per_batch, 4),
        "estimated_epoch_seconds": round(per_batch * (args.epoch_images // args.batch), 1),
        "epoch_images": args.epoch_images,
        "loader_workers": loader_options(device).get("num_workers", 0),
        "device": str(device), "device_name": device_name(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    if device.type == "cuda":
        result["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


if __name__ == "__main__":
    main()
