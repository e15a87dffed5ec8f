"""Helpers shared by the loaders: image-file decoding, the decoded-tensor cache, statistics
and fingerprints."""

from __future__ import annotations

import contextvars
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mkdt_bench.errors import MissingDataError, UserError
from mkdt_bench.safeload import UnreadableFileError, load

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"}
)
# Bump when the cached payload changes meaning, so stale cache files are not read.
_CACHE_FORMAT = 1

_WRITES = contextvars.ContextVar("mkdt_bench_data_writes", default=True)


@contextmanager
def no_writes() -> Iterator[None]:
    """Load data sets without writing anything: decoded tensors are not cached and absent
    files are not downloaded (a :class:`~mkdt_bench.errors.MissingDataError` instead).
    ``mkdt-bench run --dry-run`` plans inside it."""
    token = _WRITES.set(False)
    try:
        yield
    finally:
        _WRITES.reset(token)


def writes_allowed() -> bool:
    """False inside :func:`no_writes`."""
    return _WRITES.get()


class NotDownloaded(MissingDataError):
    """Inside :func:`no_writes`: a data set's files are absent and a run would try to
    download them."""


def no_download(name: str, folder: Path) -> None:
    """Inside :func:`no_writes`: raise :class:`NotDownloaded` instead of downloading."""
    if not writes_allowed():
        raise NotDownloaded(f"{name} is not in {folder}; a run would try to download it "
                               "(a dry run downloads nothing)", folder)


def image_files(directory: Path) -> list[str]:
    """The image files directly inside ``directory``, sorted by name; hidden files ignored.

    Paths are strings: building ``Path`` objects for 100,000 files takes most of a second.
    """
    with os.scandir(directory) as entries:
        return sorted(e.path for e in entries if _is_image(e))


def _is_image(entry: os.DirEntry) -> bool:
    suffix = os.path.splitext(entry.name)[1].lower()
    return not entry.name.startswith(".") and suffix in IMAGE_EXTENSIONS and entry.is_file()


def decode_images(files: Sequence[str | Path], size: int | None = None) -> Tensor:
    """Decode image files to one ``N x 3 x H x W`` uint8 RGB tensor.

    ``size``: resize every image to ``size x size`` with PIL's LANCZOS filter first (how the
    fine-grained sets are brought to the source resolution, spec ``evaluation.md`` A.5).

    Raises:
        UserError: a file is not a decodable image, or (without ``size``) the images differ
            in size.
    """
    out: np.ndarray | None = None
    for i, file in enumerate(files):
        try:
            with warnings.catch_warnings():  # PIL's decompression-bomb warning: refused too
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as image:
                    if image.mode.startswith(("I", "F")):  # convert("RGB") would clip to 255
                        raise UserError(f"{file} has {image.mode} pixels (16-bit or float); "
                                        "only 8-bit images are read: convert it to 8 bits")
                    if image.mode != "RGB":
                        image = image.convert("RGB")
                    if size is not None:
                        image = image.resize((size, size), Image.Resampling.LANCZOS)
                    pixels = np.asarray(image)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise UserError(f"{file} is not a decodable image: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UserError(f"{file} is not a decodable image ({type(exc).__name__})") from exc
        if out is None:
            try:
                out = np.empty((len(files), *pixels.shape), dtype=np.uint8)
            except MemoryError:
                need = len(files) * pixels.size / 2**30
                raise UserError(f"{len(files)} images of {_size(pixels.shape)} (as {file}) "
                                f"need {need:.1f} GiB decoded, more than this machine can "
                                "allocate; resize or subsample the folder") from None
        elif pixels.shape != out.shape[1:]:
            seen, first = _size(pixels.shape), _size(out.shape[1:])
            raise UserError(f"{file} is {seen} but {files[0]} is {first}; "
                            "all images must have the same size")
        out[i] = pixels
    if out is None:
        raise ValueError("no files to decode")
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _size(hwc: tuple[int, ...]) -> str:
    return f"{hwc[1]}x{hwc[0]}"


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images, in the [0, 1] scale."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = counts.sum()
        mean = (counts * values).sum() / n
        var = (counts * values.square()).sum() / n - mean.square()
        means.append(float(mean))
        stds.append(float(var.clamp_min(0).sqrt()))
    return tuple(means), tuple(stds)


def fingerprint(name: str, *tensors: Tensor, classes: Sequence[str] = ()) -> str:
    """A short, deterministic hash of a data set's name, classes and tensor contents."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape"))
    digest.update("\0".join(classes).encode("utf-8", "surrogateescape"))
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(np.ascontiguousarray(tensor.numpy()))
    return digest.hexdigest()[:16]


@dataclass
class DecodedSplits:
    """Decoded train/test tensors of a folder data set, with train-split statistics."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class SplitFiles:
    """The image files of one split and their integer labels."""

    files: list[str]
    labels: list[int]


def decode_folder_splits(source: Path, train: SplitFiles, test: SplitFiles, classes: list[str],
                         cache_dir: Path, size: int | None = None) -> DecodedSplits:
    """Decode both splits (resized to ``size`` when given, see :func:`decode_images`), or read
    them back from ``cache_dir/datasets/<key>.pt`` (written only outside :func:`no_writes`).

    The key hashes the absolute ``source`` path, ``size`` and, for every file, its path
    relative to ``source``, size, mtime and label, so any change gives a fresh decode.
    """
    key = _cache_key(source, train, test, classes, size)
    path = Path(cache_dir) / "datasets" / f"{key}.pt"
    if path.is_file():
        try:
            return _stored_splits(path, train, test, classes)
        except (UnreadableFileError, KeyError, TypeError, ValueError) as e:
            reason = e.reason if isinstance(e, UnreadableFileError) else str(e)
            warnings.warn(f"ignored decoded-image cache {path}: {reason}; decoding again",
                          stacklevel=2)
    train_images = decode_images(train.files, size)
    mean, std = channel_stats(train_images)
    decoded = DecodedSplits(
        train_images=train_images,
        train_labels=torch.tensor(train.labels, dtype=torch.int64),
        test_images=decode_images(test.files, size),
        test_labels=torch.tensor(test.labels, dtype=torch.int64),
        classes=list(classes), mean=mean, std=std,
    )
    if writes_allowed():
        _atomic_save(vars(decoded), path)
    return decoded


def _stored_splits(path: Path, train: SplitFiles, test: SplitFiles,
                   classes: list[str]) -> DecodedSplits:
    """The decoded splits stored at ``path``, checked against the files they were decoded
    from (counts, labels, classes); raises when they do not match."""
    payload = load(path)
    decoded = DecodedSplits(**{**payload, "mean": tuple(payload["mean"]),
                               "std": tuple(payload["std"])})
    for split, files in (("train", train), ("test", test)):
        images, labels = getattr(decoded, f"{split}_images"), getattr(decoded, f"{split}_labels")
        if not (isinstance(images, Tensor) and images.dtype == torch.uint8 and images.ndim == 4
                and len(images) == len(files.files) and isinstance(labels, Tensor)
                and torch.equal(labels, torch.tensor(files.labels, dtype=torch.int64))):
            raise ValueError(f"its {split} split does not match the {len(files.files)} files")
    if decoded.classes != list(classes):
        raise ValueError("its classes do not match the folders")
    if decoded.test_images.shape[1:] != decoded.train_images.shape[1:]:
        raise ValueError("its test images are not of the train images' size")
    mean, std = channel_stats(decoded.train_images)  # bound to the images, never NaN
    if not all(isinstance(v, float) and abs(v - w) <= 1e-9
               for v, w in zip(decoded.mean + decoded.std, mean + std, strict=True)):
        raise ValueError("its mean/std are not its train images' statistics")
    return decoded


def _cache_key(source: Path, train: SplitFiles, test: SplitFiles, classes: list[str],
               size: int | None) -> str:
    resize = "" if size is None else f"\0lanczos{size}"
    digest = hashlib.sha256(
        f"{_CACHE_FORMAT}\0{source.absolute()}\0{'/'.join(classes)}\0{resize}"
        .encode("utf-8", "surrogateescape"))  # a file name need not be UTF-8
    prefix = os.path.join(source, "")
    entries = []
    for split, files in (("train", train), ("test", test)):
        for file, label in zip(files.files, files.labels, strict=True):
            stat = os.stat(file)
            rel = file.removeprefix(prefix)
            entries.append(f"{split}\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}")
    digest.update("\0\n".join(sorted(entries)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _atomic_save(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
