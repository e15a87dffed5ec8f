"""``cifar10`` and ``cifar100`` through torchvision's own download and file format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100

from mkdt_bench.data import DATASETS
from mkdt_bench.data._decode import fingerprint, no_download
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.stats import MKDT_STATS
from mkdt_bench.errors import MissingDataError


def _open(name: str, cls: type[CIFAR10], root: Path, train: bool) -> CIFAR10:
    """The split from ``root``, downloading it there if absent; a UserError when offline."""
    try:
        return cls(str(root), train=train, download=False)
    except RuntimeError:
        pass  # files absent or corrupt: try to download them
    no_download(name, root / cls.base_folder)
    try:
        return cls(str(root), train=train, download=True)
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise MissingDataError(
            f"{name} is not in {root / cls.base_folder} and could not be downloaded "
            f"({reason}); put the extracted python-version files there, or choose another "
            "root with --data-root", root / cls.base_folder
        ) from exc


def _load(name: str, cls: type[CIFAR10], root: Path | None, cache_dir: Path) -> ImageDataset:
    root = Path(root) if root is not None else Path(cache_dir) / "data"
    splits = []
    for train in (True, False):
        data = _open(name, cls, root, train)
        # .data is N x H x W x C, a transposed view of the N x C x H x W arrays on disk.
        images = torch.from_numpy(np.ascontiguousarray(data.data.transpose(0, 3, 1, 2)))
        splits += [images, torch.tensor(data.targets, dtype=torch.int64)]
    classes = list(data.classes)
    mean, std = MKDT_STATS[name]  # mkdt.md §1
    return ImageDataset(name, *splits, classes=classes, mean=mean, std=std,
                        fingerprint=fingerprint(name, *splits, classes=classes))


@DATASETS.register("cifar10")
def cifar10(root: Path | None, cache_dir: Path) -> ImageDataset:
    """CIFAR-10: 50,000 train / 10,000 test 3 x 32 x 32 images, 10 classes."""
    return _load("cifar10", CIFAR10, root, cache_dir)


@DATASETS.register("cifar100")
def cifar100(root: Path | None, cache_dir: Path) -> ImageDataset:
    """CIFAR-100: 50,000 train / 10,000 test 3 x 32 x 32 images, 100 fine classes."""
    return _load("cifar100", CIFAR100, root, cache_dir)
