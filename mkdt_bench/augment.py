"""Batch augmentations on normalised image tensors (random choices drawn on the CPU, applied
on the images' device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mkdt_bench.device import to_device


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
    ``flips``.

    Two gathers on the images' device for the whole batch (the crop window's rows, then
    its columns, reversed where flipped): the values a per-image crop and flip would copy.
    """
    n, c, h, w = images.shape
    device = images.device
    offsets = to_device(offsets, device).long()
    flips = to_device(flips, device)
    raw = images * std + mean
    padded = F.pad(raw, (padding,) * 4)
    rows = (offsets[:, :1] + torch.arange(h, device=device)).view(n, 1, h, 1)
    cols = torch.arange(w, device=device).expand(n, w)
    cols = (torch.where(flips.view(n, 1), w - 1 - cols, cols) + offsets[:, 1:]).view(n, 1, 1, w)
    out = padded.gather(2, rows.expand(n, c, h, padded.shape[3]))
    out = out.gather(3, cols.expand(n, c, h, w))
    return (out - mean) / std
