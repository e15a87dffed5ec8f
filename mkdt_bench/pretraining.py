"""Pre-training a fresh encoder on a DistilledSet (spec ``evaluation.md`` A.1).

MSE between the encoder's head output and the set's targets; SGD with momentum 0.9 and
weight decay 1e-4, batch 256, shuffled, 20 epochs, constant lr = the set's learned lr
when it has one (MKDT's eta), else 0.1. Unlike the reference code the initialisation is
seeded (A.4 caveat), so a cell is reproducible.

``steps > 0`` replaces the epoch count by a fixed number of optimiser steps for every set,
whatever its size (reshuffled passes until ``steps`` updates): equal compute for a small
set and the full data, not part of protocol A.

A set without targets (``DistilledSet.ssl_recipe``, the ``random-ssl`` row) is pre-trained
instead with its SSL objective (lightly's loss and projection head on two augmented views
of each image, the teacher's recipe), under the same optimiser and batches
(:func:`epoch_batches`), so that it gets exactly as many steps as a target set of its size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mkdt_bench.device import to_device
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.options import Interval
from mkdt_bench.seeding import seed_everything
from mkdt_bench.teachers.ssl import UnlabelledViews, ssl_parts
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
#: Ranges of the ``[pretrain]`` options (:func:`mkdt_bench.options.resolve_options`).
PRETRAIN_BOUNDS: dict[str, Interval] = {
    "epochs": Interval(int, 1, None),
    "lr": Interval(float, 0, None, closed="neither"),
    "momentum": Interval(float, 0, 1, closed="left"),
    "weight_decay": Interval(float, 0, None),
    "batch_size": Interval(int, 1, None),
    "steps": Interval(int, 0, None, note="0 = use epochs"),
}

#: Options added after encoders were stored, at the value that keeps the old behaviour:
#: left out of encoder and cell keys at that value (see :func:`pretrain_key`); tables read
#: a row stored without the option as having that value.
COMPATIBLE_DEFAULTS: dict[str, Any] = {"steps": 0}


def pretrain_key(cfg: dict[str, Any]) -> dict[str, Any]:
    """What names an encoder's pre-training: ``cfg`` without compatible defaults."""
    return {k: v for k, v in cfg.items()
            if not (k in COMPATIBLE_DEFAULTS and v == COMPATIBLE_DEFAULTS[k])}


def describe_pretrain(cfg: dict[str, Any]) -> str:
    """The recipe of a ``[pretrain]`` config in words, for captions and ``eval``'s report:
    ``20 epochs at batch 256, SGD lr 0.1 (a set's learned lr where it has one), momentum
    0.9, weight decay 0.0001``."""
    length = (f"{cfg['steps']} steps" if cfg.get("steps", 0) > 0 else
              f"{cfg['epochs']} epoch{'' if cfg['epochs'] == 1 else 's'}")
    learned = " (a set's learned lr where it has one)" if cfg["use_learned_lr"] else ""
    return (f"{length} at batch {cfg['batch_size']}, SGD lr {cfg['lr']:g}{learned}, momentum "
            f"{cfg['momentum']:g}, weight decay {cfg['weight_decay']:g}")


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
    """A fresh ``arch`` encoder for ``distilled``'s images whose head regresses its targets;
    for a set without targets (SSL) the head is a 1-d placeholder that nothing trains or
    reads (the SSL projection head is separate, and evaluators read ``features``)."""
    out_dim = int(distilled.targets.shape[1]) if distilled.ssl_recipe is None else 1
    return create_model(arch, in_channels=distilled.channels, image_size=distilled.image_size,
                        out_dim=out_dim)


def pretrain_encoder(distilled: DistilledSet, arch: str, cfg: dict[str, Any], seed: int,
                     device: torch.device) -> tuple[Encoder, int]:
    """A fresh ``arch`` encoder trained on ``distilled``; returns it and the step count.

    An empty set (method ``none``) returns the seeded random initialisation.
    """
    torch.manual_seed(seed)
    model = build_encoder(distilled, arch).to(device)
    if len(distilled) == 0:
        return model.eval(), 0
    if distilled.ssl_recipe is not None:
        return pretrain_ssl(model, distilled, cfg, seed, device)
    lr = pretrain_lr(distilled, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    generator = torch.Generator().manual_seed(seed)
    images, targets = distilled.images.to(device), distilled.targets.to(device)
    steps = 0
    model.train()
    for epoch, batch, _ in epoch_batches(len(images), cfg, generator):
        batch = to_device(batch, device)
        loss = F.mse_loss(model(images[batch]), targets[batch])
        checked_step(opt, loss, f"pre-training at epoch {epoch} (lr {lr:g})",
                     "lower pretrain.lr or disable pretrain.use_learned_lr")
        steps += 1
    return model.eval(), steps


def raw_uint8(distilled: DistilledSet) -> torch.Tensor:
    """The set's images de-normalised to uint8 pixels (exact for real images)."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (distilled.mean, distilled.std))
    raw = (distilled.images * std + mean) * 255
    return raw.round().clamp(0, 255).to(torch.uint8)


def pretrain_ssl(model: Encoder, distilled: DistilledSet, cfg: dict[str, Any], seed: int,
                 device: torch.device) -> tuple[Encoder, int]:
    """``model`` trained on ``distilled``'s images by its SSL recipe; returns it and the
    step count.

    Per step: a batch of the epoch's permutation (as in regression), two views of each image
    by lightly's transform of the recipe, the loss between the projections of both views;
    the projection head is trained with the encoder and then dropped. The batches are those
    of :func:`pretrain_encoder` (:func:`epoch_batches`); a last batch of one
    image gets the epoch's first image as a second one, since the SSL losses and the
    heads' batch norm need two.
    """
    transform, head, criterion = ssl_parts(distilled.ssl_recipe, distilled.mean, distilled.std,
                                           distilled.image_size, model.feature_dim)
    head = head.to(device)
    lr = pretrain_lr(distilled, cfg)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=lr,
                          momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    views = UnlabelledViews(raw_uint8(distilled), transform)
    generator = torch.Generator().manual_seed(seed)
    seed_everything(seed)  # the view transforms draw from the global generators
    steps = 0
    model.train()
    head.train()
    for epoch, batch, perm in epoch_batches(len(views), cfg, generator):
        if len(batch) == 1:
            batch = torch.cat([batch, perm[:1]])
        pairs = [views[i] for i in batch.tolist()]
        v1 = torch.stack([p[0] for p in pairs]).to(device)
        v2 = torch.stack([p[1] for p in pairs]).to(device)
        loss = criterion(head(model.features(v1)), head(model.features(v2)))
        checked_step(opt, loss, f"SSL pre-training at epoch {epoch} (lr {lr:g})",
                     "lower pretrain.lr")
        steps += 1
    return model.eval(), steps
