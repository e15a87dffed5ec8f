"""Regression onto the set's targets (``docs/protocol.md`` A.1): MSE between the encoder's
head output and each image's target representation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkdt_bench.device import to_device
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder
from mkdt_bench.pretraining.objectives.base import PRETRAIN_OBJECTIVES, PretrainObjective


@PRETRAIN_OBJECTIVES.register("regression")
class Regression(PretrainObjective):
    """MSE onto ``distilled.targets``; the set's images and targets sit on the device."""

    hint = "lower pretrain.lr or disable pretrain.use_learned_lr"

    @staticmethod
    def out_dim(distilled: DistilledSet) -> int:
        return int(distilled.targets.shape[1])

    def __init__(self, model: Encoder, distilled: DistilledSet, seed: int,
                 device: torch.device) -> None:
        super().__init__(model, distilled, seed, device)
        self.device = device
        self.images, self.targets = distilled.images.to(device), distilled.targets.to(device)

    def loss(self, model: nn.Module, batch: Tensor, perm: Tensor) -> Tensor:
        batch = to_device(batch, self.device)
        return F.mse_loss(model(self.images[batch]), self.targets[batch])
