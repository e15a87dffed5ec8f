"""Pre-training a fresh encoder on a DistilledSet (spec ``evaluation.md`` A.1).

MSE between the encoder's head output and the set's targets; SGD with momentum 0.9 and
weight decay 1e-4, batch 256, shuffled, 20 epochs, constant lr = the set's learned lr
when it has one (MKDT's eta), else 0.1. Unlike the reference code the initialisation is
seeded (A.4 caveat), so a cell is reproducible.

``steps > 0`` replaces the epoch count by a fixed number of optimiser steps for every set,
whatever its size (reshuffled passes until ``steps`` updates): equal compute for a small
set and the full data, not part of protocol A.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mkdt_bench.device import to_device
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.training import checked_step

#: ``[pretrain]`` options.
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "lr": 0.1,
    "use_learned_lr": True,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "batch_size": 256,
    "steps": 0,
}

#: Options added after encoders were stored, at the value that keeps the old behaviour:
#: left out of encoder and cell keys at that value (see :func:`pretrain_key`).
COMPATIBLE_DEFAULTS: dict[str, Any] = {"steps": 0}


def pretrain_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """What names an encoder's pre-training: ``cfg`` without compatible defaults."""
    return {k: v for k, v in cfg.items()
            if not (k in COMPATIBLE_DEFAULTS and v == COMPATIBLE_DEFAULTS[k])}


def pretrain_lr(distilled: DistilledSet, cfg: dict[str, Any]) -> float:
    return distilled.lr if (cfg["use_learned_lr"] and distilled.lr is not None) else cfg["lr"]


def pretrain_encoder(distilled: DistilledSet, arch: str, cfg: dict[str, Any], seed: int,
                     device: torch.device) -> tuple[Encoder, int]:
    """A fresh ``arch`` encoder trained on ``distilled``; returns it and the step count.

    An empty set (method ``none``) returns the seeded random initialisation.
    """
    torch.manual_seed(seed)
    model = create_model(arch, in_channels=distilled.channels, image_size=distilled.image_size,
                         out_dim=int(distilled.targets.shape[1])).to(device)
    if len(distilled) == 0:
        return model.eval(), 0
    lr = pretrain_lr(distilled, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    images, targets = distilled.images.to(device), distilled.targets.to(device)
    steps, epoch = 0, 0
    model.train()
    while (epoch < cfg["epochs"]) if cfg["steps"] <= 0 else (steps < cfg["steps"]):
        order = to_device(torch.randperm(len(images), generator=generator), device)
        for batch in order.split(cfg["batch_size"]):  # one copy per epoch
            if 0 < cfg["steps"] <= steps:
                break
            loss = F.mse_loss(model(images[batch]), targets[batch])
            checked_step(opt, loss, f"pre-training at epoch {epoch} (lr {lr:g})",
                         "lower pretrain.lr or disable pretrain.use_learned_lr")
            steps += 1
        epoch += 1
    return model.eval(), steps
