"""What the trained teacher kinds share: the training subset, the DataLoader options of the
views, and the resumable state between epochs (issue 29 §1)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mkdt_bench.cache import atomic_torch_save
from mkdt_bench.device import to_host
from mkdt_bench.errors import UserError
from mkdt_bench.safeload import check_like, check_optimizer
from mkdt_bench.seeding import rng_state, set_rng_state


def training_subset(n: int, cfg: dict[str, Any]) -> Tensor | slice:
    """Which of ``n`` training images the teacher trains on: with ``cfg["train_images"] > 0``
    a seeded random subset of that many (folders are class-sorted), else all; refuses a
    batch larger than them."""
    keep: Tensor | slice = slice(None)
    if 0 < cfg["train_images"] < n:
        subset = torch.randperm(n, generator=torch.Generator().manual_seed(cfg["seed"]))
        keep, n = subset[: cfg["train_images"]], cfg["train_images"]
    if n < cfg["batch_size"]:
        raise UserError(f"teacher.batch_size={cfg['batch_size']} is larger than the "
                        f"{n} training images; lower it")
    return keep


#: Most DataLoader worker processes for the teacher's views on a GPU.
MAX_LOADER_WORKERS = 16


def loader_options(device: torch.device) -> dict[str, Any]:
    """DataLoader options of the teacher's SSL views: on a GPU, worker processes (up to
    :data:`MAX_LOADER_WORKERS`, one core left to the training loop) make the augmentations
    while the GPU trains, into pinned memory; on the CPU none (the training loop has the
    cores, and the numbers stay those of the single-process loader).

    Each worker is seeded from the loader's generator at the start of every epoch, so a run
    is reproducible for a given worker count and resumes exactly (the generator is in the
    snapshot); the augmentations differ from the single-process loader's.
    """
    if device.type != "cuda":
        return {}
    workers = min(MAX_LOADER_WORKERS, max((os.cpu_count() or 1) - 1, 0))
    return {"num_workers": workers, "pin_memory": torch.cuda.is_available()}


#: The parts of a teacher's resume snapshot and their types (tensors and plain data only).
SNAPSHOT_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "head": dict, "opt": dict, "sched": dict, "generator": torch.Tensor,
    "rng": dict, "epoch": int}


@dataclass
class EpochState:
    """A teacher's training state between epochs (SSL and supervised): what its resume
    snapshot holds, as tensors and plain data (issue 29 §1)."""

    model: nn.Module
    head: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    epoch: int = 0

    def save(self, path: Path) -> None:
        """The state on the host, so that it resumes on any device."""
        atomic_torch_save(to_host({
            "model": self.model.state_dict(), "head": self.head.state_dict(),
            "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "generator": self.generator.get_state(), "rng": rng_state(), "epoch": self.epoch,
        }), path)

    def load(self, snap: dict[str, Any], epochs: int) -> EpochState:
        """Continue from ``snap`` (keys :data:`SNAPSHOT_KEYS`) of a run of ``epochs`` epochs;
        raises (``ValueError``, ``RuntimeError``, ...) when it does not fit these parts, which
        may then be partly changed."""
        if not 0 <= snap["epoch"] <= epochs:
            raise ValueError(f"epoch {snap['epoch']} is not in 0..{epochs}")
        check_like(snap["model"], self.model.state_dict(), "model")
        check_like(snap["head"], self.head.state_dict(), "head")
        check_optimizer(snap["opt"], self.opt, "opt")
        check_like(snap["sched"], self.sched.state_dict(), "sched")
        self.model.load_state_dict(snap["model"])
        self.head.load_state_dict(snap["head"])
        self.opt.load_state_dict(snap["opt"])
        self.sched.load_state_dict(snap["sched"])
        self.generator.set_state(snap["generator"])
        set_rng_state(snap["rng"])
        self.epoch = snap["epoch"]
        return self
