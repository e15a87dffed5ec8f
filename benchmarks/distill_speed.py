"""Time MKDT distillation iterations (spec ``mkdt.md`` §4) on random data; print JSON.

One iteration = the N-step differentiable unroll from an expert snapshot, the matching
loss, the backward pass into images, targets and lr, and the three SGD updates. The data
and the expert snapshots are random: the cost does not depend on their values.

Peak memory is ``torch.cuda.max_memory_allocated`` over the timed iterations on a GPU,
and on the CPU the growth of the process's peak resident set (``ru_maxrss``) from just
before the first iteration (the unrolled graph of one iteration, as it is freed after
every backward pass).

Example::

    python benchmarks/distill_speed.py --images 100 --syn-steps 10 --batch-syn 100 \\
        --width 128 --resolution 32
"""

from __future__ import annotations

import argparse
import json

import torch
from _measure import time_calls

from mkdt_bench.methods._trajectories import (
    FlatNet,
    build_student,
    matching_loss,
    syn_batches,
    unroll,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100, help="synthetic images |S|")
    p.add_argument("--syn-steps", type=int, default=10, help="inner steps N")
    p.add_argument("--batch-syn", type=int, default=100, help="inner mini-batch size")
    p.add_argument("--width", type=int, default=128, help="ConvNet width")
    p.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    p.add_argument("--channels", type=int, default=3, help="image channels")
    p.add_argument("--dim", type=int, default=512, help="target representation size D")
    p.add_argument("--student", default="convnet", help="student model name")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float | int | str]:
    args = parse_args(argv)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (args.images, args.channels, args.resolution, args.resolution)
    images = torch.randn(shape, generator=g).to(device).requires_grad_(True)
    targets = torch.randn(args.images, args.dim, generator=g).to(device).requires_grad_(True)
    lr = torch.tensor(0.1, device=device, requires_grad=True)
    model = build_student({"student": args.student, "width": args.width}, images, args.dim, 0)
    net = FlatNet(model.to(device))
    start = net.flatten(net.module)
    target = start + 0.01 * torch.randn(net.num_params, generator=g).to(device)
    opts = [torch.optim.SGD([p], lr=lr_, momentum=0.5)
            for p, lr_ in ((images, 1000.0), (targets, 1.0), (lr, 1e-4))]

    def iteration() -> None:
        batches = syn_batches(args.images, args.batch_syn, args.syn_steps, g)
        loss = matching_loss(unroll(net, start, images, targets, lr, batches), start, target)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()

    seconds, peak, kind = time_calls(iteration, args.warmup, args.iterations, device)
    result = {
        "seconds_per_iteration": round(seconds, 4),
        "peak_memory_mib": round(peak, 1),
        "memory_measure": kind,
        "images": args.images, "syn_steps": args.syn_steps, "batch_syn": args.batch_syn,
        "width": args.width, "resolution": args.resolution, "channels": args.channels,
        "dim": args.dim, "student": args.student, "num_params": net.num_params,
        "iterations": args.iterations, "device": str(device),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
