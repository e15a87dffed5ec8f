"""Read the reference repositories' distilled sets as DistilledSets (``mkdt-bench convert``).

- MKDT (``mkdt.md`` §4, "Logging and checkpoints"): ``images_K.pt`` (N x C x H x W),
  ``labels_K.pt`` (N x D learned targets) and ``synlr_K.pt`` (the learned lr); file K holds
  the state after K − 1 updates (bug 8). The images are normalised with the constants of
  MKDT's ``get_dataset`` for the source set (``data.stats.MKDT_STATS``, e.g. CIFAR-10 std
  0.2023 / 0.1994 / 0.2010); ``stats`` names them (default: the data set's own name) and
  the images are re-normalised into the statistics of the data set the set is declared
  in, so an ``imagefolder:`` copy of CIFAR-10 (whose statistics come from its files)
  gets the pixels the reference distilled, not a 0.8x-scaled version of them.
- KRR-ST (``krrst.md`` §2.8, §6.2): ``x_syn.pt`` (or ``x_syn_final.pt``) and ``y_syn.pt``.
  The reference stores raw pixels (inferred [0, 1]) and feeds them un-normalised;
  ``space="raw"`` (default) normalises them with the data set's statistics, as every other
  set is stored; ``space="normalized"`` takes them as they are.

A file set with no images is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mkdt_bench import safeload
from mkdt_bench.data import ImageDataset
from mkdt_bench.data.stats import MKDT_STATS, renormalize
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError

SPACES = ("raw", "normalized")
#: ``stats`` value meaning "the files are already in the data set's own statistics".
DATASET_STATS = "dataset"


def _load(path: Path) -> torch.Tensor:
    """The floating-point tensor in ``path`` as float32; anything else a UserError."""
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist")
    value = safeload.load(path, map_location="cpu")
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{str(path)!r} holds a {type(value).__name__}, not a tensor")
    if value.layout != torch.strided or value.is_quantized or not value.dtype.is_floating_point:
        raise UserError(f"{str(path)!r} holds a {value.dtype} tensor ({value.layout}); expected "
                        "floating-point values")
    return value.detach().float()


def _directory(directory: str | Path) -> Path:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise UserError(f"reference directory {str(directory)!r} "
                        f"{'is not a directory' if d.exists() else 'does not exist'}")
    return d


def _require_images(images: torch.Tensor, path: Path) -> None:
    if images.ndim != 4 or len(images) == 0:
        raise UserError(f"{str(path)!r} holds no images (shape {tuple(images.shape)}); "
                        "expected N x C x H x W with N >= 1")


def _require_targets(targets: torch.Tensor, images: torch.Tensor, path: Path) -> None:
    if targets.ndim != 2 or len(targets) != len(images):
        raise UserError(f"{str(path)!r} holds targets of shape {tuple(targets.shape)}; expected "
                        f"N x D with N = {len(images)}, one row per image")


def _require_channels(images: torch.Tensor, dataset: ImageDataset, path: Path) -> None:
    if images.shape[1] != dataset.channels:
        raise UserError(f"{str(path)!r} holds {images.shape[1]}-channel images but "
                        f"{dataset.name!r} has {dataset.channels}; give the --dataset the "
                        "set was distilled from")


def mkdt_stats(dataset: ImageDataset, stats: str | None) -> tuple[tuple[float, ...],
                                                                  tuple[float, ...]]:
    """The (mean, std) an MKDT run normalised its images with: MKDT's constants for
    ``stats`` (default: the data set's name), or the data set's own for ``"dataset"``."""
    name = dataset.name if stats is None else stats
    if name == DATASET_STATS:
        return tuple(dataset.mean), tuple(dataset.std)
    if name not in MKDT_STATS:
        known = ", ".join([*sorted(MKDT_STATS), DATASET_STATS])
        what = f"--stats {stats!r}" if stats is not None else f"data set {dataset.name!r}"
        raise UserError(f"{what}: MKDT normalised its images with per-data-set constants; "
                        f"say which with --stats (one of {known}; '{DATASET_STATS}': the "
                        "files are already in the data set's own statistics)")
    return MKDT_STATS[name]


def from_mkdt(directory: str | Path, step: int, dataset: ImageDataset,
              stats: str | None = None) -> DistilledSet:
    """``images_{step}.pt``, ``labels_{step}.pt``, ``synlr_{step}.pt`` of an MKDT run, the
    images re-normalised from ``stats`` (see :func:`mkdt_stats`) into ``dataset``'s."""
    d = _directory(directory)
    source = mkdt_stats(dataset, stats)
    images, targets = _load(d / f"images_{step}.pt"), _load(d / f"labels_{step}.pt")
    _require_images(images, d / f"images_{step}.pt")
    _require_channels(images, dataset, d / f"images_{step}.pt")
    _require_targets(targets, images, d / f"labels_{step}.pt")
    lr_value = _load(d / f"synlr_{step}.pt")
    if lr_value.numel() != 1:
        raise UserError(f"{str(d / f'synlr_{step}.pt')!r} holds a tensor of shape "
                        f"{tuple(lr_value.shape)}; expected one number, the learned lr")
    lr = float(lr_value.reshape(()))
    target = (tuple(dataset.mean), tuple(dataset.std))
    images = renormalize(images, source, target)
    return _distilled(d, images=images, targets=targets, lr=lr, source=dataset.name,
                      mean=dataset.mean, std=dataset.std, method="mkdt-reference",
                      extra={"converted_from": str(d), "step": step, "updates": step - 1,
                             "reference_stats": {"mean": list(source[0]),
                                                 "std": list(source[1])}})


def from_krrst(directory: str | Path, dataset: ImageDataset, space: str = "raw") -> DistilledSet:
    """``x_syn.pt`` (or ``x_syn_final.pt``) and ``y_syn.pt`` of a KRR-ST run."""
    if space not in SPACES:
        raise UserError(f"KRR-ST input space {space!r} is not one of {', '.join(SPACES)}")
    d = _directory(directory)
    x_path = d / "x_syn.pt" if (d / "x_syn.pt").is_file() else d / "x_syn_final.pt"
    if not x_path.is_file():
        raise UserError(f"reference directory {str(d)!r} holds neither x_syn.pt nor "
                        "x_syn_final.pt")
    images, targets = _load(x_path), _load(d / "y_syn.pt")
    _require_images(images, x_path)
    _require_channels(images, dataset, x_path)
    _require_targets(targets, images, d / "y_syn.pt")
    value_range = (float(images.min()), float(images.max()))
    if space == "raw":
        mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std).view(1, -1, 1, 1)
        images = (images - mean) / std
    return _distilled(d, images=images, targets=targets, lr=None, source=dataset.name,
                      mean=dataset.mean, std=dataset.std, method="krrst-reference",
                      extra={"converted_from": str(d), "input_space": space,
                             "stored_value_range": value_range})


def _distilled(d: Path, **fields: Any) -> DistilledSet:
    """The DistilledSet of ``fields``; what it refuses names the reference directory."""
    try:
        return DistilledSet(**fields)
    except UserError as e:
        raise UserError(f"reference directory {str(d)!r}: {e}") from None
