"""Time the official MKDT ``distill.py`` (``jiayini1119/MKDT``) on random data; print JSON.

Run by ``distill_speed.py --reference DIR`` in a process of its own (its peak resident set
is its own). The official ``distill.main`` runs unmodified on the CPU through
``tests/reference/reference_env.py``: ``get_dataset`` serves random images, a ``wandb``
stand-in, ``Tensor.cuda`` / ``cpu`` for a GPU-less machine, a progress bar that notes the
time each iteration starts. One expert file of 3 random snapshots (start epoch 0, target
epoch 2) stands for the buffers: the cost does not depend on the values.

Example::

    OMP_NUM_THREADS=1 python benchmarks/_official_mkdt.py /path/to/MKDT --images 100 \\
        --syn-steps 10 --batch-syn 100
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from _measure import add_student_args, add_unroll_args, peak_rss_mib

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reference"))
from reference_env import (  # noqa: E402
    Recorder,
    fake_get_dataset,
    git_commit,
    no_cuda,
    patched,
    reference_modules,
    stub_wandb,
)


def official_model(width: int, resolution: int) -> str:
    """The official ``get_network`` name of the ConvNet student (width 128 at 32 / 64 px,
    or the fixed-width variants at 32 px)."""
    if width == 128:
        return "ConvNet" if resolution <= 32 else "ConvNetD4"
    if resolution != 32 or width not in (32, 64, 256, 512, 1024):
        raise SystemExit(f"the official code has no ConvNet of width {width} at {resolution} px")
    return f"ConvNetW{width}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="checkout of jiayini1119/MKDT")
    add_unroll_args(p)
    add_student_args(p)
    p.add_argument("--iterations", type=int, default=3, help="timed iterations")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    args = p.parse_args(argv)
    model = official_model(args.width, args.resolution)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.resolution, args.resolution, generator=g)
    stub_wandb()
    recorder = Recorder()
    with tempfile.TemporaryDirectory() as tmp_dir, reference_modules(args.reference) as load:
        tmp = Path(tmp_dir)
        utils, distill = load("utils"), load("distill")
        net = utils.get_network(model, 3, args.dim, (args.resolution,) * 2, fix_net=True)
        start = [p.detach().clone() for p in net.parameters()]
        trajectory = [[t + 0.01 * k * torch.randn(t.shape, generator=g) for t in start]
                      for k in range(3)]
        (tmp / "experts").mkdir()
        torch.save([trajectory], tmp / "experts" / "replay_buffer_0.pt")
        torch.save(torch.randn(args.images, args.dim, generator=g), tmp / "labels.pt")
        with open(tmp / "init.pkl", "wb") as f:
            pickle.dump(list(range(args.images)), f)
        options = SimpleNamespace(
            dataset="CIFAR10", model=model, eval_it=10**9, iters=args.warmup + args.iterations,
            lr_img=1000.0, lr_lr=1e-4, lr_teacher=0.1, batch_syn=args.batch_syn, data_path="",
            expert_epochs=2, syn_steps=args.syn_steps, max_start_epoch=1, lr_labels=1.0,
            image_init_idx_path=str(tmp / "init.pkl"), train_labels_path=str(tmp / "labels.pt"),
            run_id="bench", expert_dir=str(tmp / "experts"), criterion="mse")
        rss: list[float] = []
        bar = recorder.tqdm

        def timed_bar(iterable=None, *a, **k):  # notes the peak RSS with each tick
            inner = bar(iterable, *a, **k)

            class Bar:
                def __iter__(self):
                    for item in inner:
                        rss.append(peak_rss_mib())
                        yield item
                    rss.append(peak_rss_mib())

                def __getattr__(self, name):
                    return getattr(inner, name)

            return Bar()

        cwd = Path.cwd()
        os.chdir(tmp)
        try:
            with patched(distill, "get_dataset", fake_get_dataset(images)), \
                    patched(distill, "tqdm", timed_bar), no_cuda():
                distill.main(options)
        finally:
            os.chdir(cwd)
    # the last loop is distill's iterations: len(ticks) = iterations + 1 at its end
    ticks = recorder.ticks[-(options.iters + 1):]
    marks = rss[-(options.iters + 1):]
    times = [b - a for a, b in zip(ticks, ticks[1:])][args.warmup:]
    result = {
        "engine": "official", "reference_commit": git_commit(args.reference), "model": model,
        "images": args.images, "syn_steps": args.syn_steps, "batch_syn": args.batch_syn,
        "width": args.width, "resolution": args.resolution, "dim": args.dim,
        "iterations": args.iterations, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "seconds_per_iteration": round(statistics.mean(times), 4),
        "seconds_each": [round(t, 4) for t in times],
        "peak_memory_mib": round(marks[-1] - marks[0], 1), "memory_measure": "ru_maxrss_growth",
        "process_peak_rss_mib": round(peak_rss_mib(), 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
