"""Batch augmentations on normalised image tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(images: Tensor, mean: Tensor, std: Tensor, padding: int,
              generator: torch.Generator) -> Tensor:
    """RandomCrop(H, padding) then RandomHorizontalFlip(0.5) per image, on normalised images
    (``mean``/``std`` shaped 1 x C x 1 x 1).

    The reference code (Kornia, ``krrst.md`` §2.4, ``evaluation.md`` B.3) pads raw pixels with
    0 and normalises afterwards, so the padding here is 0 in raw space, i.e. ``-mean/std``.
    """
    n, _, h, w = images.shape
    raw = images * std + mean
    padded = F.pad(raw, (padding,) * 4)
    offsets = torch.randint(2 * padding + 1, (n, 2), generator=generator).tolist()
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])
    out = torch.where(flips.to(out.device).view(n, 1, 1, 1), out.flip(-1), out)
    return (out - mean) / std
