"""Batch augmentations on normalised image tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(images: Tensor, mean: Tensor, std: Tensor, padding: int,
              generator: torch.Generator) -> Tensor:
    """RandomCrop(H, padding) then RandomHorizontalFlip(0.5) per image, on normalised images
    (``mean``/``std`` shaped 1 x C x 1 x 1): :func:`draw_crop_flip` then
    :func:`apply_crop_flip`.

    The reference code (Kornia, ``krrst.md`` §2.4, ``evaluation.md`` B.3) pads raw pixels with
    0 and normalises afterwards, so the padding here is 0 in raw space, i.e. ``-mean/std``.
    """
    offsets, flips = draw_crop_flip(len(images), padding, generator)
    return apply_crop_flip(images, mean, std, padding, offsets, flips)


def draw_crop_flip(n: int, padding: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The random choices of :func:`crop_flip` for ``n`` images: crop offsets ``n x 2``
    (dy, dx in 0..2·padding) and flip bits ``n``."""
    offsets = torch.randint(2 * padding + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    return offsets, flips


def apply_crop_flip(images: Tensor, mean: Tensor, std: Tensor, padding: int, offsets: Tensor,
                    flips: Tensor) -> Tensor:
    """:func:`crop_flip` with given choices: pad with raw 0, crop at ``offsets``, flip where
    ``flips``."""
    n, _, h, w = images.shape
    raw = images * std + mean
    padded = F.pad(raw, (padding,) * 4)
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w]
                       for i, (dy, dx) in enumerate(offsets.tolist())])
    out = torch.where(flips.to(out.device).view(n, 1, 1, 1), out.flip(-1), out)
    return (out - mean) / std
