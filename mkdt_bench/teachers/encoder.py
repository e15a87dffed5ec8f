"""The teacher's encoder and its target representations (spec ``mkdt.md`` §1): the pooled
embedding (``features``) of every image, eval mode, no augmentation, no projector, no L2
normalisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.models import Encoder, create_model


def build_teacher(arch: str, dataset: ImageDataset) -> Encoder:
    """A teacher encoder for ``dataset``; its regression head is unused and removed."""
    model = create_model(arch, in_channels=dataset.channels, image_size=dataset.image_size,
                         out_dim=1)
    model.head = nn.Identity()
    return model


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, device: torch.device,
           batch_size: int = 512) -> Tensor:
    """``model.features`` of every image, eval mode, no augmentation, on CPU as float32."""
    was_training = model.training
    model.eval()
    out = [model.features(images[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty(0, getattr(model, "feature_dim", 0))
    return torch.cat(out)
