"""Time MKDT distillation iterations (spec ``mkdt.md`` §4) on random data; print JSON.

One iteration = the N-step differentiable unroll from an expert snapshot, the matching
loss, the backward pass into images, targets and lr, and the three SGD updates. The data
and the expert snapshots are random: the cost does not depend on their values.

Peak memory is ``torch.cuda.max_memory_allocated`` over the timed iterations on a GPU,
and on the CPU the growth of the process's peak resident set (``ru_maxrss``) from just
before the first iteration (the unrolled graph of one iteration, as it is freed after
every backward pass).

``--engine`` picks the unroll: ``baseline`` (the reference-style MTT code of
``_mtt_baseline.py``), ``full`` or ``checkpoint`` (the mkdt option ``unroll``). On the CPU
run each configuration in its own process: the peak resident set never goes down.
``--reference DIR`` (a checkout of ``jiayini1119/MKDT``) also times the official
``distill.py`` itself on the same problem, in a process of its own (``_official_mkdt.py``),
and reports the engine's time and memory as ratios to it.
``--heap auto`` runs the engine in mkdt's retained CPU heap and the baseline in glibc's
default one. Several comma-separated engines are timed round robin in one heap (the
unroll code at an equal allocator). ``gflops`` counts 9F per image and inner step (F: the
forward FLOPs of the convolutions and linear layers).

Example::

    OMP_NUM_THREADS=1 python benchmarks/distill_speed.py --images 100 --syn-steps 10 \\
        --batch-syn 100 --width 128 --resolution 32 --engine checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _measure import (
    add_device_arg,
    add_student_args,
    add_unroll_args,
    device_name,
    on_device,
    peak_rss_mib,
    sync,
    time_calls,
)
from _mtt_baseline import ReparamNet, baseline_loss

from mkdt_bench.allocator import retained_heap
from mkdt_bench.device import unroll_budget_bytes
from mkdt_bench.methods._experts import build_student
from mkdt_bench.methods._unroll import (
    FlatNet,
    choose_unroll,
    full_unroll_bytes,
    meta_step,
    syn_batches,
)

ENGINES = ("baseline", "full", "checkpoint")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_unroll_args(p)
    add_student_args(p)
    p.add_argument("--channels", type=int, default=3, help="image channels")
    p.add_argument("--student", default="convnet", help="student model name")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    add_device_arg(p)
    p.add_argument("--engine", default="full",
                   help="baseline: reference-style MTT unroll (_mtt_baseline.py); full / "
                        "checkpoint: the engine's unroll modes (mkdt option unroll); several, "
                        "comma-separated, are timed round robin in one heap (median; no "
                        "memory figure)")
    p.add_argument("--heap", default="auto", choices=("auto", "retained", "default"),
                   help="glibc heap during iterations: retained (mkdt_bench.allocator, "
                        "what mkdt does on the CPU) or default; auto: retained for the "
                        "engine, default for the baseline (round robin: retained)")
    p.add_argument("--peak", action="store_true",
                   help="also measure the float32 matmul rate (2048^2) for comparison")
    p.add_argument("--reference", type=Path, metavar="DIR",
                   help="a checkout of jiayini1119/MKDT: also time its distill.py on the same "
                        "problem (its own process) and report ratios to it")
    return p.parse_args(argv)


def time_official(args: argparse.Namespace) -> dict[str, Any]:
    """``_official_mkdt.py`` on the same problem, in a process of its own (CPU only)."""
    if args.device != "cpu":
        raise SystemExit("--reference times the official code on the CPU; use --device cpu")
    script = Path(__file__).with_name("_official_mkdt.py")
    cmd = [sys.executable, str(script), str(args.reference), "--images", str(args.images),
           "--syn-steps", str(args.syn_steps), "--batch-syn", str(args.batch_syn),
           "--width", str(args.width), "--resolution", str(args.resolution), "--dim",
           str(args.dim), "--iterations", str(args.iterations), "--warmup", str(args.warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"the official distill.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def ratios_to(official: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The engine's seconds and memory divided by the official code's."""
    seconds = result["seconds_per_iteration"]
    if isinstance(seconds, dict):
        return {"time_ratio_to_official": {e: round(t / official["seconds_per_iteration"], 3)
                                           for e, t in seconds.items()}}
    out = {"time_ratio_to_official": round(seconds / official["seconds_per_iteration"], 3)}
    for key, name in (("peak_memory_mib", "memory_ratio_to_official"),
                      ("process_peak_rss_mib", "process_rss_ratio_to_official")):
        if result.get(key) is not None and official[key] > 0:
            out[name] = round(result[key] / official[key], 3)
    return out


def conv_linear_flops(module: torch.nn.Module, image: torch.Tensor) -> int:
    """Multiply-add FLOPs (2 per MAC) of the convolutions and linear layers in a forward of
    one image; element-wise work (norm, ReLU, pooling) is not counted."""
    total = 0

    def hook(layer: torch.nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(layer, torch.nn.Conv2d):
            k = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
            total += 2 * out.numel() * k
        elif isinstance(layer, torch.nn.Linear):
            total += 2 * out.numel() * layer.in_features

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(image[:1])
    for handle in handles:
        handle.remove()
    return total


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul rate (n x n), the practical peak to compare with."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    engines = args.engine.split(",")
    for engine in engines:
        if engine not in ENGINES:
            raise SystemExit(f"--engine {engine!r}: use {', '.join(ENGINES)} (comma-separated)")
    with on_device(args.device) as device:
        result = measure(args, engines, device)
    if args.reference is not None:
        result["official"] = time_official(args)
        result.update(ratios_to(result["official"], result))
    print(json.dumps(result))
    return result


def measure(args: argparse.Namespace, engines: list[str], device: torch.device) -> dict[str, Any]:
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
    baseline = ReparamNet(net.module)

    def retained(engine: str) -> bool:
        return args.heap == "retained" or (args.heap == "auto" and engine != "baseline")

    def iteration(engine: str) -> None:
        batches = syn_batches(args.images, args.batch_syn, args.syn_steps, g, device)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        if engine == "baseline":
            baseline_loss(baseline, start, target, images, targets, lr, batches).backward()
        else:
            meta_step(net, start, target, images, targets, lr, batches, engine)[1]()
        for opt in opts:
            opt.step()

    # forward F, backward 2F, double backward 6F per inner step of min(batch, |S|) images
    work = 9 * conv_linear_flops(net.module, images) * min(args.batch_syn, args.images) \
        * args.syn_steps / 1e9
    batch = min(args.batch_syn, args.images)
    graph = full_unroll_bytes(net.module, images[:1].detach(), batch, args.syn_steps)
    result: dict[str, Any] = {
        "images": args.images, "syn_steps": args.syn_steps, "batch_syn": args.batch_syn,
        "width": args.width, "resolution": args.resolution, "channels": args.channels,
        "dim": args.dim, "student": args.student, "num_params": net.num_params,
        "engine": args.engine, "iterations": args.iterations, "device": str(device),
        "device_name": device_name(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "gflop_per_iteration": round(work, 4), "heap": args.heap,
        "full_unroll_estimate_gib": round(graph / 2**30, 2),
        "auto_unroll": choose_unroll("auto", net.module, images[:1].detach(), batch,
                                     args.syn_steps, unroll_budget_bytes(device)),
    }
    if len(engines) == 1:
        with retained_heap(retained(engines[0])):
            seconds, peak, kind = time_calls(lambda: iteration(engines[0]), args.warmup,
                                             args.iterations, device)
        result.update(seconds_per_iteration=round(seconds, 4), peak_memory_mib=round(peak, 1),
                      memory_measure=kind, gflops=float(f"{work / seconds:.4g}"))
        if device.type == "cpu":  # the whole process: torch, data and the iterations
            result["process_peak_rss_mib"] = round(peak_rss_mib(), 1)
    else:
        times = {engine: [] for engine in engines}
        # round robin, so that a loaded machine slows all alike, in one heap for all
        # engines (--heap auto: retained): this compares the unroll code at an equal
        # allocator; the allocator's own gain needs one process per engine
        with retained_heap(args.heap != "default"):
            for engine in engines:
                for _ in range(args.warmup):
                    iteration(engine)
            for _ in range(args.iterations):
                for engine in engines:
                    sync(device)
                    t0 = time.perf_counter()
                    iteration(engine)
                    sync(device)
                    times[engine].append(time.perf_counter() - t0)
        seconds_by = {e: statistics.median(t) for e, t in times.items()}
        result["seconds_per_iteration"] = {e: round(t, 4) for e, t in seconds_by.items()}
        result["gflops"] = {e: float(f"{work / t:.4g}") for e, t in seconds_by.items()}
        if "baseline" in seconds_by:
            result["time_ratio_to_baseline"] = {
                e: round(t / seconds_by["baseline"], 3) for e, t in seconds_by.items()}
    if args.peak:
        result["matmul_gflops"] = round(matmul_gflops(device), 1)
    return result


if __name__ == "__main__":
    main()
