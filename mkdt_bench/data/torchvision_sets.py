"""``cifar10`` and ``cifar100`` in torchvision's download and file format, read without
unpickling anything but arrays (:func:`read_batch`)."""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import download_and_extract_archive

from mkdt_bench.data._decode import fingerprint, no_download
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.registry import DATASETS
from mkdt_bench.data.stats import MKDT_STATS
from mkdt_bench.errors import MissingDataError

#: NumPy's array reconstructor, whichever module this NumPy keeps it in.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
#: The only globals CIFAR's batch files name (pickled by Python 2's NumPy).
_ARRAY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
                  ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
                  ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}


class _ArrayUnpickler(pickle.Unpickler):
    """Dicts, lists, strings, numbers and NumPy arrays; any other global is refused, so a
    file cannot run code (issue 29 §1; torchvision's reader unpickles anything)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return _ARRAY_GLOBALS[(module, name)]


def matches_published(data: bytes, md5: str) -> bool:
    """Whether ``data`` has the md5 sum torchvision lists for the file."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest() == md5


#: CIFAR's largest python-version file (cifar-100's train) is 155 MB.
_MAX_BATCH_BYTES = 256 << 20


def read_batch(path: Path, md5: str) -> dict[str, Any]:
    """One of CIFAR's python-version files: read once, checked against the ``md5`` torchvision
    lists for it, then unpickled from those same bytes with :class:`_ArrayUnpickler`.

    Raises ``OSError`` when the file is absent or unreadable, ``ValueError`` when its checksum
    differs or it holds anything but arrays and plain data.
    """
    if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
        raise OSError(f"{path} is not a regular file")
    with open(path, "rb") as f:
        data = f.read(_MAX_BATCH_BYTES + 1)
    if len(data) > _MAX_BATCH_BYTES or not matches_published(data, md5):
        raise ValueError(f"{path} is not the published file (md5 differs)")
    try:
        out = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(out, dict):
        raise ValueError(f"{path} holds no dict")
    return out


def _read(cls: type[CIFAR10], folder: Path, train: bool) -> tuple[Tensor, Tensor, list[str]]:
    """Images (N x C x H x W uint8), labels and class names of a split in ``folder``."""
    batches = [read_batch(folder / name, md5)
               for name, md5 in (cls.train_list if train else cls.test_list)]
    classes = read_batch(folder / cls.meta["filename"], cls.meta["md5"])[cls.meta["key"]]
    images = np.vstack([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = [y for b in batches for y in b.get("labels", b.get("fine_labels", []))]
    if images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"{folder} holds {len(images)} images and {len(labels)} labels")
    return (torch.from_numpy(np.ascontiguousarray(images)),
            torch.tensor(labels, dtype=torch.int64), [str(c) for c in classes])


def _open(name: str, cls: type[CIFAR10], root: Path, train: bool
          ) -> tuple[Tensor, Tensor, list[str]]:
    """The split from ``root``, downloading it there if absent; a UserError when offline."""
    folder = root / cls.base_folder
    try:
        return _read(cls, folder, train)
    except (OSError, ValueError, KeyError):
        pass  # files absent or corrupt: try to download them
    no_download(name, folder)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        return _read(cls, folder, train)
    except Exception as exc:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise MissingDataError(
            f"{name} is not in {folder} and could not be downloaded ({reason}); put the "
            "extracted python-version files there, or choose another root with --data-root",
            folder
        ) from exc


def _load(name: str, cls: type[CIFAR10], root: Path | None, cache_dir: Path) -> ImageDataset:
    root = Path(root) if root is not None else Path(cache_dir) / "data"
    splits: list[Tensor] = []
    for train in (True, False):
        images, labels, classes = _open(name, cls, root, train)
        splits += [images, labels]
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
