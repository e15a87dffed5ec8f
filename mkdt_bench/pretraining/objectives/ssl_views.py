"""SSL on views of the set's images, for a set without targets (``DistilledSet.ssl_recipe``,
the ``random-ssl`` row): the recipe's loss and projection head (:mod:`mkdt_bench.ssl`) on
two augmented views of each image, the teacher's recipe."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mkdt_bench.distilled import DistilledSet
from mkdt_bench.models import Encoder
from mkdt_bench.pretraining.objectives.base import PRETRAIN_OBJECTIVES, PretrainObjective
from mkdt_bench.seeding import seed_everything
from mkdt_bench.ssl import ssl_parts
from mkdt_bench.ssl.views import UnlabelledViews


def raw_uint8(distilled: DistilledSet) -> Tensor:
    """The set's images de-normalised to uint8 pixels (exact for real images)."""
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (distilled.mean, distilled.std))
    raw = (distilled.images * std + mean) * 255
    return raw.round().clamp(0, 255).to(torch.uint8)


@PRETRAIN_OBJECTIVES.register("ssl")
class SSLViews(PretrainObjective):
    """The recipe's loss between the projections of two views of each image of a batch; the
    projection head is trained with the encoder and then dropped. A last batch of one image
    gets the epoch's first image as a second one, since the SSL losses and the heads' batch
    norm need two. The view transforms draw from the global generators, seeded here."""

    step_name = "SSL pre-training"

    @staticmethod
    def out_dim(distilled: DistilledSet) -> int:
        """1: a set without targets has nothing for the encoder's regression head to predict,
        so no loss reaches it and evaluators read ``features``; it keeps the width it has
        always had, so the encoder is built (and its generator draws made) as before."""
        return 1

    def __init__(self, model: Encoder, distilled: DistilledSet, seed: int,
                 device: torch.device) -> None:
        super().__init__(model, distilled, seed, device)
        recipe = distilled.ssl_recipe
        assert recipe is not None
        transform, head, self.criterion = ssl_parts(recipe, distilled.mean, distilled.std,
                                                    distilled.image_size, model.feature_dim)
        self.head = head.to(device).train()
        self.device = device
        self.views = UnlabelledViews(raw_uint8(distilled), transform)
        seed_everything(seed)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def loss(self, model: nn.Module, batch: Tensor, perm: Tensor) -> Tensor:
        if len(batch) == 1:
            batch = torch.cat([batch, perm[:1]])
        pairs = [self.views[i] for i in batch.tolist()]
        v1 = torch.stack([p[0] for p in pairs]).to(self.device)
        v2 = torch.stack([p[1] for p in pairs]).to(self.device)
        return self.criterion(self.head(model.features(v1)), self.head(model.features(v2)))
