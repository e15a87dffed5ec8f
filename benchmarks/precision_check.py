"""Meta-gradient of one MKDT iteration (spec ``mkdt.md`` §4) under each ``run.precision``;
print JSON with each one's cosine similarity to strict float32 and its time.

Modes (``mkdt_bench.device``): ``fp32`` (the reference: IEEE float32 everywhere, no TF32),
``default`` (PyTorch's defaults, what a run without ``run.precision`` does: TF32
convolutions, float32 matrix products), ``tf32`` (TF32 convolutions and matrix products),
``bf16`` (``tf32`` plus bfloat16 autocast around the unroll, as ``mkdt`` runs it). On the
CPU ``default`` and ``tf32`` equal ``fp32`` and are left out. A mode is worth using where
its cosine to ``fp32`` is at least 0.99 (``offer``). All modes start from the same data,
batches and snapshot.

Example::

    python benchmarks/precision_check.py --images 1000 --syn-steps 40 --batch-syn 256 \\
        --device cuda --unroll full
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from _measure import (
    add_device_arg,
    add_student_args,
    add_unroll_args,
    device_name,
    run_measurement,
    sync,
)

from mkdt_bench.device import PRECISIONS, autocast, configure, settings
from mkdt_bench.methods._experts import build_student
from mkdt_bench.methods._unroll import FlatNet, meta_step, syn_batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_unroll_args(p)
    add_student_args(p)
    p.add_argument("--unroll", default="full", choices=("full", "checkpoint"))
    p.add_argument("--modes", default=",".join(PRECISIONS), help="comma-separated")
    add_device_arg(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_measurement(parse_args(argv), measure)


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    modes = [m for m in args.modes.split(",") if m != "fp32"]
    unknown = set(modes) - set(PRECISIONS)
    if unknown:
        raise SystemExit(f"--modes: {sorted(unknown)[0]!r} is not one of {PRECISIONS}")
    if device.type == "cpu":
        modes = [m for m in modes if m not in ("default", "tf32")]  # CUDA settings
    g = torch.Generator().manual_seed(0)
    shape = (args.images, 3, args.resolution, args.resolution)
    images = torch.randn(shape, generator=g).to(device)
    targets = torch.randn(args.images, args.dim, generator=g).to(device)
    model = build_student({"student": "convnet", "width": args.width}, images, args.dim, 0)
    net = FlatNet(model.to(device))
    start = net.flatten(net.module)
    target = start + 0.01 * torch.randn(net.num_params, generator=g).to(device)
    batches = syn_batches(args.images, args.batch_syn, args.syn_steps, g, device)
    result: dict[str, Any] = {
        "images": args.images, "syn_steps": args.syn_steps, "batch_syn": args.batch_syn,
        "width": args.width, "unroll": args.unroll, "device": str(device),
        "device_name": device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }

    def gradient(precision: str) -> tuple[torch.Tensor, float, float]:
        configure(device, precision)
        leaves = [t.clone().requires_grad_(True)
                  for t in (images, targets, torch.tensor(0.1).to(device))]
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, precision):
            loss, backward = meta_step(net, start, target, *leaves, batches, args.unroll)
            backward()
        sync(device)
        seconds = time.perf_counter() - t0
        grad = torch.cat([leaf.grad.float().reshape(-1) for leaf in leaves])
        return grad, seconds, loss.item()

    try:
        gradient("fp32")  # untimed warm-up
        reference, seconds, loss = gradient("fp32")
        result["fp32"] = {"seconds": round(seconds, 3), "loss": loss, "cosine_to_fp32": 1.0,
                          "settings": settings(device, "fp32", False)}
        for mode in modes:
            grad, seconds, loss = gradient(mode)
            cosine = torch.nn.functional.cosine_similarity(grad, reference, dim=0).item()
            result[mode] = {"seconds": round(seconds, 3), "loss": loss,
                            "cosine_to_fp32": cosine, "offer": cosine >= 0.99,
                            "settings": settings(device, mode, False)}
    finally:
        configure(device, "default")
    return result


if __name__ == "__main__":
    main()
