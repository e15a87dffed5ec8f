"""Effect of half-precision expert snapshots (mkdt ``expert_half``) on the matching loss
and its meta-gradient (spec ``mkdt.md`` §2, §4); print JSON.

Trains one expert on random images and targets, then for each start epoch t compares one
iteration's matching loss and meta-gradient (images, targets, lr) computed from the
float32 snapshots θ_t, θ_{t+M} with those from the same snapshots rounded to float16.
Also reports the bytes per expert of both ((E + 1) x P values).

Example::

    OMP_NUM_THREADS=1 python benchmarks/half_snapshots.py --images 2000 --epochs 3
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
from _measure import add_student_args, add_unroll_args

from mkdt_bench.allocator import retained_heap
from mkdt_bench.methods._experts import EXPERT_DEFAULTS, build_student, train_expert
from mkdt_bench.methods._unroll import FlatNet, meta_step, syn_batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000, help="expert training images")
    p.add_argument("--epochs", type=int, default=3, help="expert epochs E")
    p.add_argument("--expert-epochs", type=int, default=2, help="M")
    add_unroll_args(p, "--syn-images")
    add_student_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.resolution, args.resolution, generator=g)
    targets = torch.randn(args.images, args.dim, generator=g)
    cfg = dict(EXPERT_DEFAULTS, width=args.width, train_epochs=args.epochs, num_experts=1)
    with retained_heap():
        trajectory = train_expert(cfg, 0, images, targets, cpu)
    net = FlatNet(build_student(cfg, images, args.dim, 0))
    result: dict[str, Any] = {
        "images": args.images, "epochs": args.epochs, "width": args.width,
        "num_params": net.num_params, "bytes_per_expert_float32": trajectory.nbytes,
        "bytes_per_expert_float16": trajectory.half().nbytes,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "starts": {},
    }
    for t in range(args.epochs - args.expert_epochs + 1):
        batches = syn_batches(args.syn_images, args.batch_syn, args.syn_steps, g)
        out = {}
        for name, snaps in (("float32", trajectory), ("float16", trajectory.half().float())):
            leaves = [images[:args.syn_images].clone().requires_grad_(True),
                      targets[:args.syn_images].clone().requires_grad_(True),
                      torch.tensor(0.1, requires_grad=True)]
            with retained_heap():
                loss, backward = meta_step(net, snaps[t], snaps[t + args.expert_epochs],
                                           *leaves, batches, "full")
                backward()
            out[name] = (loss.item(), torch.cat([x.grad.reshape(-1) for x in leaves]))
        (l32, g32), (l16, g16) = out["float32"], out["float16"]
        result["starts"][t] = {
            "loss_float32": l32, "loss_float16": l16,
            "loss_relative_difference": abs(l16 - l32) / abs(l32),
            "gradient_cosine": torch.nn.functional.cosine_similarity(g16, g32, dim=0).item(),
            "snapshot_step_norm": (trajectory[t + args.expert_epochs]
                                   - trajectory[t]).norm().item(),
            "rounding_norm": (trajectory[t].half().float() - trajectory[t]).norm().item(),
        }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
