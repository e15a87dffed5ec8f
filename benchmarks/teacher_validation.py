"""Probe a candidate teacher of the ``quick`` preset on a validation split; print JSON.

The teacher (``mkdt_bench.teachers.ssl.train_teacher``, the ``quick`` preset's SimCLR recipe
with ``--arch`` and ``--epochs``) trains on a seeded ``--train`` of the 1,437 digits
training images; the linear probe every row gets (``evaluation.md`` A.2,
``mkdt_bench.evaluators.linear``) is fitted on 1 % and 5 % of their labels and scored on
the remaining training images, over ``--seeds`` label draws. The test split is never read.
Seconds are the teacher's training time on ``--threads`` torch threads.

Example (the measurements of ``results/quick.md``)::

    python benchmarks/teacher_validation.py --arch convnet:width=64,depth=2 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mkdt_bench.allocator import retained_heap
from mkdt_bench.config import build_config
from mkdt_bench.data import load_dataset
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.evaluators.linear import LinearProbe
from mkdt_bench.teachers.ssl import train_teacher


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet10", help="teacher.arch")
    p.add_argument("--epochs", type=int, default=20, help="teacher.epochs")
    p.add_argument("--train", type=int, default=1150, help="training images of the teacher "
                   "(the other training images are the validation split)")
    p.add_argument("--seeds", type=int, default=5, help="label draws of the probe")
    p.add_argument("--split-seed", type=int, default=12345, help="seed of the split")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p.parse_args(argv)


def validation_split(train: int, seed: int) -> ImageDataset:
    """The digits training split as ``train`` training and the rest as test images."""
    digits = load_dataset("digits")
    order = torch.randperm(len(digits.train_images), generator=torch.Generator().manual_seed(seed))
    fit, held = order[:train], order[train:]
    return ImageDataset("digits-validation", digits.train_images[fit], digits.train_labels[fit],
                        digits.train_images[held], digits.train_labels[held], digits.classes,
                        digits.mean, digits.std)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = validation_split(args.train, args.split_seed)
    cfg = build_config("quick", {}, [f"teacher.arch={args.arch!r}",
                                     f"teacher.epochs={args.epochs}"]).to_dict()["teacher"]
    with tempfile.TemporaryDirectory() as scratch, retained_heap():
        start = time.perf_counter()
        teacher = train_teacher(data, cfg, Path(scratch), torch.device("cpu"))
        seconds = time.perf_counter() - start
    out: dict[str, Any] = {"arch": args.arch, "epochs": args.epochs, "threads": args.threads,
                           "train_images": args.train, "validation_images": len(data.test_labels),
                           "seconds": round(seconds, 1)}
    for fraction in (0.01, 0.05):
        scores = [LinearProbe().evaluate(teacher, data, fraction, seed, torch.device("cpu"))
                  ["accuracy"] for seed in range(args.seeds)]
        out[f"accuracy@{fraction:.0%}"] = [round(float(np.mean(scores)), 2),
                                           round(float(np.std(scores)), 2)]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
