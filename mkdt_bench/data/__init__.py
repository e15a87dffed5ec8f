"""Data sets: a registry of loaders that return an in-memory :class:`ImageDataset`.

``load_dataset(name, root=..., cache_dir=...)`` is the one entry point; names are
``digits`` (embedded default), ``cifar10``, ``cifar100``, ``tinyimagenet``,
``imagefolder:PATH`` and the fine-grained transfer tasks ``aircraft``, ``cub2011``,
``dogs``, ``flowers``. Plug-ins register through the ``mkdt_bench.datasets`` entry-point
group: a callable ``(root: Path | None, cache_dir: Path) -> ImageDataset``; a loader that
resizes its images also takes an ``image_size`` keyword.
"""

from __future__ import annotations

from mkdt_bench.data import (  # noqa: F401 - the built-in loaders register themselves
    digits,
    finegrained,
    imagefolder,
    tinyimagenet,
    torchvision_sets,
)
from mkdt_bench.data._decode import no_writes
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "ImageDataset", "load_dataset", "no_writes"]
