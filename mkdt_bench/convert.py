"""Read the reference repositories' distilled sets as DistilledSets (``mkdt-bench convert``).

- MKDT (``mkdt.md`` §4, "Logging and checkpoints"): ``images_K.pt`` (N x C x H x W, in the
  data set's normalised space), ``labels_K.pt`` (N x D learned targets) and ``synlr_K.pt``
  (the learned lr); file K holds the state after K − 1 updates (bug 8).
- KRR-ST (``krrst.md`` §2.8, §6.2): ``x_syn.pt`` (or ``x_syn_final.pt``) and ``y_syn.pt``.
  The reference stores raw pixels (inferred [0, 1]) and feeds them un-normalised;
  ``space="raw"`` (default) normalises them with the data set's statistics, as every other
  set is stored; ``space="normalized"`` takes them as they are.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mkdt_bench.data import ImageDataset
from mkdt_bench.distilled import DistilledSet
from mkdt_bench.errors import UserError

SPACES = ("raw", "normalized")


def _load(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist")
    value = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{str(path)!r} holds a {type(value).__name__}, not a tensor")
    return value.detach().float()


def from_mkdt(directory: str | Path, step: int, dataset: ImageDataset) -> DistilledSet:
    """``images_{step}.pt``, ``labels_{step}.pt``, ``synlr_{step}.pt`` of an MKDT run."""
    d = Path(directory).expanduser()
    images, targets = _load(d / f"images_{step}.pt"), _load(d / f"labels_{step}.pt")
    lr = float(_load(d / f"synlr_{step}.pt").reshape(-1)[0])
    return DistilledSet(images=images, targets=targets, lr=lr, source=dataset.name,
                        mean=dataset.mean, std=dataset.std, method="mkdt-reference",
                        extra={"converted_from": str(d), "step": step,
                               "updates": step - 1})


def from_krrst(directory: str | Path, dataset: ImageDataset, space: str = "raw") -> DistilledSet:
    """``x_syn.pt`` (or ``x_syn_final.pt``) and ``y_syn.pt`` of a KRR-ST run."""
    if space not in SPACES:
        raise UserError(f"KRR-ST input space {space!r} is not one of {', '.join(SPACES)}")
    d = Path(directory).expanduser()
    x_path = d / "x_syn.pt" if (d / "x_syn.pt").is_file() else d / "x_syn_final.pt"
    images, targets = _load(x_path), _load(d / "y_syn.pt")
    value_range = (float(images.min()), float(images.max())) if images.numel() else (0.0, 0.0)
    if space == "raw":
        mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std).view(1, -1, 1, 1)
        if images.ndim == 4 and images.shape[1] == len(dataset.mean):
            images = (images - mean) / std
    return DistilledSet(images=images, targets=targets, lr=None, source=dataset.name,
                        mean=dataset.mean, std=dataset.std, method="krrst-reference",
                        extra={"converted_from": str(d), "input_space": space,
                               "stored_value_range": value_range})
