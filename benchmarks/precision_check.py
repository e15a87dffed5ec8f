"""Meta-gradient of one MKDT iteration (spec ``mkdt.md`` §4) in float32 and in faster
precisions; print JSON with their cosine similarity to float32 and their times.

Modes: ``fp32`` (reference; TF32 off), ``tf32`` (CUDA only: TF32 matmuls and convolutions),
``bf16`` (``torch.autocast`` with bfloat16 around the unroll). A mode is worth offering only
if its cosine similarity to ``fp32`` is at least 0.99 (the "fast and lean" issue). All
modes start from the same data, batches and snapshot.

Example::

    python benchmarks/precision_check.py --images 1000 --syn-steps 40 --batch-syn 256 \\
        --device cuda --unroll full
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Any

import torch
from _measure import add_student_args, add_unroll_args, sync

from mkdt_bench.methods._experts import build_student
from mkdt_bench.methods._unroll import FlatNet, meta_step, syn_batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_unroll_args(p)
    add_student_args(p)
    p.add_argument("--unroll", default="full", choices=("full", "checkpoint"))
    p.add_argument("--modes", default="fp32,tf32,bf16", help="comma-separated")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p.parse_args(argv)


def precision(mode: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a mode runs in; TF32 flags are set by :func:`main` around it."""
    if mode == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    modes = args.modes.split(",")
    if device.type != "cuda" and "tf32" in modes:
        modes.remove("tf32")  # a CUDA feature
    g = torch.Generator().manual_seed(0)
    shape = (args.images, 3, args.resolution, args.resolution)
    images = torch.randn(shape, generator=g).to(device)
    targets = torch.randn(args.images, args.dim, generator=g).to(device)
    model = build_student({"student": "convnet", "width": args.width}, images, args.dim, 0)
    net = FlatNet(model.to(device))
    start = net.flatten(net.module)
    target = start + 0.01 * torch.randn(net.num_params, generator=g).to(device)
    batches = [b.to(device) for b in syn_batches(args.images, args.batch_syn, args.syn_steps, g)]
    result: dict[str, Any] = {
        "images": args.images, "syn_steps": args.syn_steps, "batch_syn": args.batch_syn,
        "width": args.width, "unroll": args.unroll, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    grads: dict[str, torch.Tensor] = {}
    warm = [t.clone().requires_grad_(True) for t in (images, targets, start.new_tensor(0.1))]
    meta_step(net, start, target, *warm, batches, args.unroll)[1]()  # untimed warm-up
    for mode in ["fp32", *[m for m in modes if m != "fp32"]]:
        leaves = [t.clone().requires_grad_(True)
                  for t in (images, targets, torch.tensor(0.1, device=device))]
        tf32 = mode == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        sync(device)
        t0 = time.perf_counter()
        with precision(mode, device):
            loss, backward = meta_step(net, start, target, *leaves, batches, args.unroll)
            backward()
        sync(device)
        seconds = time.perf_counter() - t0
        grads[mode] = torch.cat([leaf.grad.float().reshape(-1) for leaf in leaves])
        result[mode] = {
            "seconds": round(seconds, 3), "loss": loss.item(),
            "cosine_to_fp32": torch.nn.functional.cosine_similarity(
                grads[mode], grads["fp32"], dim=0).item(),
        }
        result[mode]["offer"] = result[mode]["cosine_to_fp32"] >= 0.99
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convolutions
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
