"""The fine-grained transfer tasks of spec ``evaluation.md`` A.5 / B.3: ``aircraft``,
``cub2011``, ``dogs`` and ``flowers``.

Each is LANCZOS-resized to ``image_size`` (the source data set's resolution when the
runner loads it as a task; 32 by default) and normalised with the mean/std of its own
resized training split. Aircraft and Flowers come through torchvision (which can also
download them); CUB-200-2011 and Stanford Dogs are read from their published archive
layouts, which have to be unpacked by hand. Absent files raise :class:`MissingDataError`,
so a grid shows these tasks as ``n/a (missing: <path>)`` and runs the rest.

| name | classes | train split (labelled pool) / test split | files under ``root`` |
|---|---|---|---|
| ``aircraft`` | 100 variants | trainval (6,667) / test (3,333) | ``fgvc-aircraft-2013b/`` |
| ``cub2011`` | 200 | train (5,994) / test (5,794) | ``CUB_200_2011/`` |
| ``dogs`` | 120 | train (12,000) / test (8,580) | ``stanford-dogs/`` |
| ``flowers`` | 102 | train (1,020) / test (6,149) | ``flowers-102/`` |
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import FGVCAircraft, Flowers102

from mkdt_bench.data._decode import SplitFiles, decode_folder_splits, fingerprint, no_download
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.registry import DATASETS
from mkdt_bench.errors import MissingDataError, UserError

DEFAULT_SIZE = 32


def _root(root: Path | None, cache_dir: Path) -> Path:
    return Path(root).expanduser() if root is not None else Path(cache_dir) / "data"


def _check_size(name: str, image_size: int) -> None:
    if image_size < 1:
        raise UserError(f"{name}: image_size={image_size} must be at least 1")


def _build(name: str, base: Path, train: SplitFiles, test: SplitFiles, classes: list[str],
           cache_dir: Path, image_size: int) -> ImageDataset:
    for split_name, split in (("train", train), ("test", test)):
        if not split.files:
            raise UserError(f"{name}: the {split_name} split in {base} has no images")
        bad = [y for y in split.labels if not 0 <= y < len(classes)]
        if bad:  # a label of 0 in a 1-based list would silently become the last class
            raise UserError(f"{name}: a {split_name} image in {base} has the label "
                            f"{bad[0] + 1}; the {len(classes)} classes are labelled "
                            f"1 to {len(classes)}")
    if len(set(train.labels)) < 2:
        raise UserError(f"{name}: the train split in {base} has fewer than 2 classes")
    decoded = decode_folder_splits(base, train, test, classes, cache_dir, size=image_size)
    tensors = (decoded.train_images, decoded.train_labels,
               decoded.test_images, decoded.test_labels)
    return ImageDataset(name, *tensors, classes=classes, mean=decoded.mean, std=decoded.std,
                        fingerprint=fingerprint(f"{name}@{image_size}", *tensors,
                                                classes=classes))


def _torchvision_split(name: str, folder: Path,
                       make: Callable[[bool], Any]) -> tuple[SplitFiles, Any]:
    """File paths and labels of a torchvision set built with an identity loader (no decoding),
    and the set: the files already on disk, else a download attempt, else a MissingDataError."""
    try:
        dataset = make(False)
    except (RuntimeError, OSError):
        no_download(name, folder)
        try:
            dataset = make(True)
        except Exception as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise MissingDataError(
                f"{name} is not in {folder} and could not be downloaded ({reason}); put the "
                "extracted files there, or choose another root with --data-root", folder
            ) from exc
    files, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return SplitFiles(files=[str(f) for f in files], labels=[int(y) for y in labels]), dataset


@DATASETS.register("aircraft")
def aircraft(root: Path | None, cache_dir: Path, image_size: int = DEFAULT_SIZE) -> ImageDataset:
    """FGVC-Aircraft, 100 variants, trainval / test (torchvision ``FGVCAircraft``)."""
    _check_size("aircraft", image_size)
    root = _root(root, cache_dir)
    folder = root / "fgvc-aircraft-2013b"
    (train, data), (test, _) = (_torchvision_split(
        "aircraft", folder, lambda download, split=split: FGVCAircraft(
            str(root), split=split, annotation_level="variant", download=download, loader=str))
        for split in ("trainval", "test"))
    return _build("aircraft", folder, train, test, list(data.classes), cache_dir, image_size)


@DATASETS.register("flowers")
def flowers(root: Path | None, cache_dir: Path, image_size: int = DEFAULT_SIZE) -> ImageDataset:
    """Oxford Flowers-102, ``train`` (10 images per class) / ``test`` (torchvision
    ``Flowers102``; the split MKDT probes on, spec A.3)."""
    _check_size("flowers", image_size)
    root = _root(root, cache_dir)
    folder = root / "flowers-102"
    (train, _), (test, _) = (_torchvision_split(
        "flowers", folder, lambda download, split=split: Flowers102(
            str(root), split=split, download=download, loader=str))
        for split in ("train", "test"))
    classes = [str(i) for i in range(102)]  # torchvision gives indices 0-101 only
    return _build("flowers", folder, train, test, classes, cache_dir, image_size)


def _require(paths: list[Path], name: str, how: str) -> None:
    for path in paths:
        if not path.exists():
            raise MissingDataError(f"{name} is not complete: {path} is missing ({how}); or "
                                   "choose another root with --data-root", path)


@DATASETS.register("cub2011")
def cub2011(root: Path | None, cache_dir: Path, image_size: int = DEFAULT_SIZE) -> ImageDataset:
    """CUB-200-2011 from the ``CUB_200_2011.tgz`` layout: ``images.txt`` (id path),
    ``image_class_labels.txt`` (id class, 1-based), ``train_test_split.txt`` (id is_train),
    ``classes.txt`` and ``images/``."""
    _check_size("cub2011", image_size)
    base = _root(root, cache_dir)
    base = base if (base / "images.txt").is_file() else base / "CUB_200_2011"
    names = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt")
    _require([base / n for n in names] + [base / "images"], "cub2011",
             "unpack CUB_200_2011.tgz from https://www.vision.caltech.edu/datasets/cub_200_2011/")

    def table(name: str, integer_values: bool = False) -> dict[int, str]:
        try:
            if not (base / name).is_file():  # a FIFO would block the read
                raise OSError(0, "not a regular file")
            text = (base / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
            raise UserError(f"cub2011: {base / name} cannot be read as UTF-8 text "
                            f"({reason})") from None
        rows = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                fields = line.split(maxsplit=1)
                if (len(fields) != 2 or not fields[0].isdecimal()
                        or (integer_values and not fields[1].strip().isdecimal())):
                    value = "<number>" if integer_values else "<value>"
                    raise UserError(f"cub2011: {base / name} line {number}: expected "
                                    f"'<id> {value}' (the id a number), got {line!r}")
                rows[int(fields[0])] = fields[1].strip()
        return rows

    paths, labels, is_train = table(names[0]), table(names[1], True), table(names[2], True)
    classes = [name for _, name in sorted(table("classes.txt").items())]
    train, test = SplitFiles([], []), SplitFiles([], [])
    for image_id in sorted(paths):
        if image_id not in labels or image_id not in is_train:
            raise UserError(f"cub2011: image id {image_id} of images.txt has no label or split "
                            f"in {base}")
        split = train if is_train[image_id] == "1" else test
        split.files.append(str(base / "images" / paths[image_id]))
        split.labels.append(int(labels[image_id]) - 1)
    return _build("cub2011", base, train, test, classes, cache_dir, image_size)


def _mat_split(path: Path) -> tuple[list[str], list[int]]:
    """``file_list`` and 1-based ``labels`` of a Stanford Dogs ``*_list.mat``."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        mat = loadmat(path)
        files = [str(np.ravel(entry)[0]) for entry in np.ravel(mat["file_list"])]
        labels = [int(v) - 1 for v in np.ravel(mat["labels"])]
    except (MatReadError, OSError, ValueError, TypeError, KeyError, IndexError,
            NotImplementedError) as e:
        raise UserError(f"dogs: {path} is not a list of the Stanford Dogs lists.tar "
                        f"(file_list and labels): {type(e).__name__}") from None
    if len(files) != len(labels):
        raise UserError(f"dogs: {path} has {len(files)} files but {len(labels)} labels")
    return files, labels


@DATASETS.register("dogs")
def dogs(root: Path | None, cache_dir: Path, image_size: int = DEFAULT_SIZE) -> ImageDataset:
    """Stanford Dogs from ``images.tar`` (``Images/<wnid>-<breed>/*.jpg``) and ``lists.tar``
    (``train_list.mat`` / ``test_list.mat``: ``file_list`` relative to ``Images/``,
    1-based ``labels``); classes are the sorted breed folders."""
    _check_size("dogs", image_size)
    base = _root(root, cache_dir)
    base = base if (base / "train_list.mat").is_file() else base / "stanford-dogs"
    _require([base / "Images", base / "train_list.mat", base / "test_list.mat"], "dogs",
             "unpack images.tar and lists.tar from http://vision.stanford.edu/aditya86/"
             "ImageNetDogs/ into one folder")
    splits = []
    for name in ("train_list.mat", "test_list.mat"):
        files, labels = _mat_split(base / name)
        splits.append(SplitFiles([str(base / "Images" / f) for f in files], labels))
    classes = sorted(p.name for p in (base / "Images").iterdir() if p.is_dir())
    top = max(splits[0].labels + splits[1].labels, default=-1)
    if top >= len(classes):
        raise UserError(f"dogs: label {top + 1} in the lists but only {len(classes)} class "
                        f"folders in {base / 'Images'}")
    return _build("dogs", base, splits[0], splits[1], classes, cache_dir, image_size)
