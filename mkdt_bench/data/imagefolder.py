"""``imagefolder:PATH``: any ``PATH/{train,test}/<class>/<image>`` tree of image files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mkdt_bench.data._decode import (
    IMAGE_EXTENSIONS,
    SplitFiles,
    decode_folder_splits,
    fingerprint,
    image_files,
)
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.data.registry import DATASETS
from mkdt_bench.errors import MissingDataError, UserError

_LAYOUT = "expected PATH/train/<class>/<image> and PATH/test/<class>/<image>"


@DATASETS.register_prefix("imagefolder")
def imagefolder(path: str) -> Callable[..., ImageDataset]:
    """The loader for the image tree at ``path`` (``root`` is not used)."""
    if not path:
        raise UserError(f"imagefolder needs a path: imagefolder:PATH ({_LAYOUT})")

    def loader(root: Path | None, cache_dir: Path) -> ImageDataset:
        return load_imagefolder(Path(path).expanduser(), cache_dir)

    return loader


def load_imagefolder(path: Path, cache_dir: Path) -> ImageDataset:
    """Decode (or read from the cache) the tree at ``path``; classes = sorted train folders.

    Images are decoded to RGB and must all have the same size; mean/std come from train.
    The fingerprint depends on the images, labels and classes, not on where they lie.
    """
    if not path.is_dir():
        raise MissingDataError(f"imagefolder: {path} does not exist or is not a folder "
                               f"({_LAYOUT})", path)
    classes = _class_folders(path / "train")
    test_classes = _class_folders(path / "test")
    if test_classes != classes:
        missing = sorted(set(classes) - set(test_classes)) or "none"
        extra = sorted(set(test_classes) - set(classes)) or "none"
        raise UserError(f"imagefolder: {path / 'test'} must have the class folders of "
                        f"{path / 'train'}; missing: {missing}, extra: {extra}")
    if len(classes) < 2:
        raise UserError(f"imagefolder: {path / 'train'} has one class folder ({classes[0]!r}); "
                        "a task needs at least 2 classes (with one, every probe scores 100 %)")
    train, test = (_split_files(path / split, classes) for split in ("train", "test"))
    decoded = decode_folder_splits(path, train, test, classes, cache_dir)
    tensors = (decoded.train_images, decoded.train_labels,
               decoded.test_images, decoded.test_labels)
    return ImageDataset(f"imagefolder:{path}", *tensors, classes=decoded.classes,
                        mean=decoded.mean, std=decoded.std,
                        fingerprint=fingerprint("imagefolder", *tensors, classes=classes))


def _class_folders(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise UserError(f"imagefolder: {split_dir} is missing ({_LAYOUT})")
    classes = sorted(p.name for p in split_dir.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"imagefolder: {split_dir} has no class folders ({_LAYOUT})")
    for name in classes:  # class names are stored in sets and tables, which hold text
        if not name.isprintable() or name != name.encode("utf-8", "ignore").decode():
            raise UserError(f"imagefolder: class folder {ascii(name)} in {split_dir} is not "
                            "a printable UTF-8 name; rename it")
    return classes


def _split_files(split_dir: Path, classes: list[str]) -> SplitFiles:
    split = SplitFiles(files=[], labels=[])
    for label, name in enumerate(classes):
        files = image_files(split_dir / name)
        if not files:
            extensions = " ".join(sorted(IMAGE_EXTENSIONS))
            raise UserError(f"imagefolder: {split_dir / name} has no image files ({extensions})")
        split.files += files
        split.labels += [label] * len(files)
    return split
