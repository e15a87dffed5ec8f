"""Unlabelled images as pairs of SSL views, for a DataLoader."""

from __future__ import annotations

import torch
from PIL import Image
from torch import Tensor

from mkdt_bench.ssl.base import ViewTransform


class UnlabelledViews(torch.utils.data.Dataset):
    """uint8 images (``N x C x H x W``) as PIL images, each returned as a pair of views."""

    def __init__(self, images: Tensor, transform: ViewTransform) -> None:
        mode = "L" if images.shape[1] == 1 else "RGB"
        arrays = images.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a.squeeze(-1) if mode == "L" else a, mode) for a in arrays]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        v1, v2 = self.transform(self.images[i])
        return v1, v2
