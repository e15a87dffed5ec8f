"""Pre-training a fresh encoder on a DistilledSet (``docs/protocol.md`` A.1).

SGD with momentum 0.9 and weight decay 1e-4, batch 256, shuffled, 20 epochs, constant lr =
the set's learned lr when it has one (MKDT's eta), else 0.1, on the loss of the set's
objective (:mod:`mkdt_bench.pretraining.objectives`: MSE onto its targets, or its SSL recipe
on views). Unlike the reference code the initialisation is seeded (A.4 caveat), so a cell
is reproducible.

``steps > 0`` replaces the epoch count by a fixed number of optimiser steps for every set,
whatever its size (reshuffled passes until ``steps`` updates): equal compute for a small
set and the full data, not part of protocol A. Every objective gets the same batches
(:func:`epoch_batches`), so an SSL set gets exactly as many steps as a target set of its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.pretraining.objectives import PRETRAIN_OBJECTIVES, objective_name
from mkdt_bench.training import checked_step


def pretrain_lr(distilled: DistilledSet, cfg: dict[str, Any]) -> float:
    return distilled.lr if (cfg["use_learned_lr"] and distilled.lr is not None) else cfg["lr"]


def epoch_batches(n: int, cfg: dict[str, Any],
                  generator: torch.Generator) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(epoch, batch indices, the epoch's permutation)`` for a set of ``n`` images: a
    fresh permutation per pass, split into ``batch_size`` batches, for ``epochs`` passes,
    or with ``steps > 0`` until ``steps`` batches (the last pass cut short)."""
    steps, epoch = 0, 0
    while (epoch < cfg["epochs"]) if cfg["steps"] <= 0 else (steps < cfg["steps"]):
        perm = torch.randperm(n, generator=generator)
        for batch in perm.split(cfg["batch_size"]):
            if 0 < cfg["steps"] <= steps:
                return
            yield epoch, batch, perm
            steps += 1
        epoch += 1


def build_encoder(distilled: DistilledSet, arch: str) -> Encoder:
    """A fresh ``arch`` encoder for ``distilled``'s images, its head as wide as the set's
    objective needs (the targets' width for regression)."""
    out_dim = PRETRAIN_OBJECTIVES.get(objective_name(distilled)).out_dim(distilled)
    return create_model(arch, in_channels=distilled.channels, image_size=distilled.image_size,
                        out_dim=out_dim)


def pretrain_encoder(distilled: DistilledSet, arch: str, cfg: dict[str, Any], seed: int,
                     device: torch.device) -> tuple[Encoder, int]:
    """A fresh ``arch`` encoder trained on ``distilled`` by its objective; returns it and
    the step count.

    An empty set (method ``none``) returns the seeded random initialisation.
    """
    torch.manual_seed(seed)
    model = build_encoder(distilled, arch).to(device)
    if len(distilled) == 0:
        return model.eval(), 0
    objective = PRETRAIN_OBJECTIVES.get(objective_name(distilled))(model, distilled, seed,
                                                                    device)
    lr = pretrain_lr(distilled, cfg)
    opt = torch.optim.SGD([*model.parameters(), *objective.parameters()], lr=lr,
                          momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    steps = 0
    model.train()
    for epoch, batch, perm in epoch_batches(len(distilled), cfg, generator):
        checked_step(opt, objective.loss(model, batch, perm),
                     f"{objective.step_name} at epoch {epoch} (lr {lr:g})", objective.hint)
        steps += 1
    return model.eval(), steps
