"""Data sets: a registry of loaders that return an in-memory :class:`ImageDataset`.

``load_dataset(name, root=..., cache_dir=...)`` is the one entry point; names are
``digits`` (embedded default), ``cifar10``, ``cifar100``, ``tinyimagenet`` and
``imagefolder:PATH``. Plug-ins register through the ``mkdt_bench.datasets`` entry-point
group: a callable ``(root: Path | None, cache_dir: Path) -> ImageDataset``.
"""

from __future__ import annotations

from pathlib import Path

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.registry import Registry

DATASETS: Registry = Registry("dataset", entry_point_group="mkdt_bench.datasets")


def load_dataset(name: str, root: str | Path | None = None,
                 cache_dir: str | Path | None = None) -> ImageDataset:
    """Load a registered data set into memory.

    Args:
        name: registered name, or ``imagefolder:PATH``.
        root: where the files of downloadable sets live (``--data-root``).
        cache_dir: where decoded copies are cached.
    """
    from mkdt_bench.cache import default_cache_dir

    loader = DATASETS.get(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return loader(root=Path(root) if root is not None else None, cache_dir=cache)


# Built-in loaders register themselves on import.
from mkdt_bench.data import digits, imagefolder, tinyimagenet, torchvision_sets  # noqa: E402,F401

__all__ = ["DATASETS", "ImageDataset", "load_dataset"]
