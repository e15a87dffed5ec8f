"""``tinyimagenet``: the standard ``tiny-imagenet-200`` folder (200 classes, 64 x 64 RGB)."""

from __future__ import annotations

import os
from pathlib import Path

from mkdt_bench.data._decode import SplitFiles, decode_folder_splits, fingerprint, image_files
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.registry import DATASETS
from mkdt_bench.data.stats import MKDT_STATS
from mkdt_bench.errors import MissingDataError, UserError

FOLDER = "tiny-imagenet-200"
_LAYOUT = (f"expected {FOLDER}/wnids.txt, {FOLDER}/train/<wnid>/images/*.JPEG, "
           f"{FOLDER}/val/images/*.JPEG and {FOLDER}/val/val_annotations.txt")
MEAN, STD = MKDT_STATS["tinyimagenet"]  # mkdt.md §1 (ImageNet's statistics)


@DATASETS.register("tinyimagenet")
def tinyimagenet(root: Path | None, cache_dir: Path) -> ImageDataset:
    """Train = ``train/``, test = ``val/``; classes are the sorted wnids.

    ``root`` is the folder holding ``tiny-imagenet-200`` or that folder itself
    (default ``cache_dir/data``). Decoded tensors are cached under ``cache_dir``.
    """
    base = _find(Path(root) if root is not None else Path(cache_dir) / "data")
    classes = sorted(set(_read_text(base / "wnids.txt").split()))
    if len(classes) < 2:
        raise UserError(f"tinyimagenet: {base / 'wnids.txt'} lists {len(classes)} class(es); "
                        "a task needs at least 2 (with one, every probe scores 100 %)")
    train = SplitFiles(files=[], labels=[])
    for label, wnid in enumerate(classes):
        folder = base / "train" / wnid / "images"
        files = image_files(folder) if folder.is_dir() else []
        if not files:
            raise UserError(f"tinyimagenet: {folder} has no images ({_LAYOUT})")
        train.files += files
        train.labels += [label] * len(files)
    decoded = decode_folder_splits(base, train, _val_files(base, classes), classes, cache_dir)
    tensors = (decoded.train_images, decoded.train_labels,
               decoded.test_images, decoded.test_labels)
    return ImageDataset("tinyimagenet", *tensors, classes=classes, mean=MEAN, std=STD,
                        fingerprint=fingerprint("tinyimagenet", *tensors, classes=classes))


def _find(root: Path) -> Path:
    """The ``tiny-imagenet-200`` folder given it or its parent; a UserError if incomplete."""
    is_base = root.name == FOLDER or (root / "wnids.txt").is_file()
    base = root if is_base else root / FOLDER
    needed = [base / "wnids.txt", base / "train", base / "val" / "images",
              base / "val" / "val_annotations.txt"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise MissingDataError(f"tinyimagenet is not in {base} ({missing[0]} is missing; "
                               f"{_LAYOUT}); unpack tiny-imagenet-200.zip there or choose the "
                               "root with --data-root", missing[0])
    return base


def _read_text(path: Path) -> str:
    """The UTF-8 text of one of the lists; a UserError naming it when it is unreadable."""
    try:
        if not path.is_file():  # a FIFO would block the read, /dev/zero never end it
            raise OSError(0, "not a regular file")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise UserError(f"tinyimagenet: {path} cannot be read as UTF-8 text ({reason}; "
                        f"{_LAYOUT})") from None


def _val_files(base: Path, classes: list[str]) -> SplitFiles:
    """Val images (sorted by file name) labelled by ``val/val_annotations.txt``."""
    annotations = base / "val" / "val_annotations.txt"
    label_of = {wnid: i for i, wnid in enumerate(classes)}
    present = {os.path.basename(p) for p in image_files(base / "val" / "images")}
    rows = {}
    for number, line in enumerate(_read_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of or fields[0] not in present:
            raise UserError(f"tinyimagenet: {annotations} line {number}: expected an image in "
                            f"val/images, a tab and a wnid from wnids.txt, got {line!r}")
        rows[fields[0]] = label_of[fields[1]]
    if not rows:
        raise UserError(f"tinyimagenet: {annotations} lists no images ({_LAYOUT})")
    names = sorted(rows)
    return SplitFiles(files=[os.path.join(base, "val", "images", n) for n in names],
                      labels=[rows[n] for n in names])
