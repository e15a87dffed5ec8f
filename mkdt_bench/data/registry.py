"""The data-set registry and ``load_dataset``: below the loader files, which register into
it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from mkdt_bench.data.base import ImageDataset
from mkdt_bench.registry import Registry

DATASETS: Registry[Callable[..., ImageDataset]] = Registry(
    "dataset", entry_point_group="mkdt_bench.datasets")


def load_dataset(name: str, root: str | Path | None = None,
                 cache_dir: str | Path | None = None,
                 image_size: int | None = None) -> ImageDataset:
    """Load a registered data set into memory.

    Args:
        name: registered name, or ``imagefolder:PATH``.
        root: where the files of downloadable sets live (``--data-root``).
        cache_dir: where decoded copies are cached.
        image_size: the side to resize to, for loaders that resize (the fine-grained
            tasks); the others keep their native resolution.

    Raises:
        MissingDataError: the set's files are absent and cannot be downloaded.
    """
    from mkdt_bench.cache import default_cache_dir

    loader = DATASETS.get(name)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    kwargs = {}
    if image_size is not None and resizes(loader):
        kwargs["image_size"] = image_size
    return loader(root=Path(root) if root is not None else None, cache_dir=cache, **kwargs)


def resizes(loader: object) -> bool:
    """Whether a loader takes an ``image_size`` (resizes its images)."""
    try:
        return "image_size" in inspect.signature(loader).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
