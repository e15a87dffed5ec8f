"""The in-memory image data set every stage consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ImageDataset:
    """A labelled image data set held in memory as uint8 tensors (these sets fit).

    Images are ``N x C x H x W`` uint8; :meth:`normalized` gives the float tensors that
    every model sees, normalised with the data set's own ``mean``/``std``
    (spec ``mkdt.md`` §1 table for CIFAR and Tiny-ImageNet).
    """

    name: str
    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(f"{split}_images must be uint8 N x C x H x W, got {images.dtype} "
                                 f"{tuple(images.shape)}")
            if len(images) != len(labels):
                raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} entries, got {self.mean}, {self.std}")

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 images -> float, scaled to [0, 1] and normalised with this set's statistics."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images.float().div_(255.0) - mean) / std

    def normalized(self, split: str, index: Tensor | None = None) -> Tensor:
        """The split's images (those at ``index`` only, if given), normalised."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        images = getattr(self, f"{split}_images")
        return self.normalize(images if index is None else images[index])
