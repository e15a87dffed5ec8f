"""DistilledSet: what every method returns and every evaluator consumes.

On disk a set is a directory with ``images.pt`` (N x C x H x W float, normalised as
declared), ``targets.pt`` (N x D float), optionally ``lr.pt`` (a 0-d tensor: the learned
pre-training learning rate) and ``distilled.json`` (the metadata below).

A set with an ``ssl_recipe`` has no targets (N x 0): it is pre-trained with that SSL
objective on two augmented views of each image instead of by regression (``random-ssl``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mkdt_bench.errors import UserError

META_FILE = "distilled.json"


@dataclass
class DistilledSet:
    """A (possibly synthetic) pre-training set with regression targets.

    Attributes:
        images: ``N x C x H x W`` float images in the normalised space of ``mean``/``std``.
        targets: ``N x D`` target representations (teacher features or learned ones).
        lr: learned pre-training learning rate (MKDT's eta), or ``None``.
        source: name of the data set the images come from.
        mean, std: per-channel normalisation the images are expressed in.
        method: name of the method that produced the set.
        config_hash: hash of the method's resolved config and inputs.
        extra: free-form method metadata (indices of chosen images, loss curves, ...).
        ssl_recipe: for a set without targets, the SSL pre-training recipe (the
            ``[teacher]`` keys ``ssl``, ``proj_dim``, ``bt_lambda``, ``temperature``,
            ``min_scale``, ``cj_strength``, ``gaussian_blur``, ``hf_prob``); ``None`` for a
            set pre-trained by regression onto its targets.
    """

    images: Tensor
    targets: Tensor
    lr: float | None
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    method: str
    config_hash: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    ssl_recipe: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise UserError(f"distilled images must be N x C x H x W, got shape "
                            f"{tuple(self.images.shape)}")
        if self.targets.ndim != 2 or len(self.targets) != len(self.images):
            raise UserError(f"distilled targets must be N x D with N = {len(self.images)} "
                            f"images, got shape {tuple(self.targets.shape)}")
        if not (torch.isfinite(self.images).all() and torch.isfinite(self.targets).all()):
            raise UserError(f"distilled set from {self.method!r} contains NaN or infinite values")
        if self.lr is not None and not (self.lr > 0 and self.lr < float("inf")):
            raise UserError(f"distilled learning rate must be positive and finite, got {self.lr}")
        if self.ssl_recipe is not None and self.targets.shape[1] != 0:
            raise UserError(f"a distilled set with an SSL recipe has no targets (N x 0), got "
                            f"shape {tuple(self.targets.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def storage_bytes(self) -> int:
        """Bytes of images + targets + lr, as the budget columns count them."""
        n = self.images.numel() * self.images.element_size()
        n += self.targets.numel() * self.targets.element_size()
        return n + (4 if self.lr is not None else 0)

    def metadata(self) -> dict[str, Any]:
        meta = {k: v for k, v in asdict(self).items() if k not in ("images", "targets")
                and not (k == "ssl_recipe" and v is None)}  # target sets: as before the field
        meta.update(num_images=len(self), image_size=self.image_size, channels=self.channels,
                    target_dim=int(self.targets.shape[1]))
        return meta

    def save(self, directory: str | Path) -> Path:
        """Write the tensors and the JSON manifest into ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        torch.save(self.images.detach().cpu().contiguous(), d / "images.pt")
        torch.save(self.targets.detach().cpu().contiguous(), d / "targets.pt")
        if self.lr is not None:
            torch.save(torch.tensor(float(self.lr)), d / "lr.pt")
        (d / META_FILE).write_text(json.dumps(self.metadata(), indent=1, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> DistilledSet:
        """Read a set written by :meth:`save`; missing or inconsistent files are a UserError."""
        d = Path(directory)
        for name in (META_FILE, "images.pt", "targets.pt"):
            if not (d / name).is_file():
                raise UserError(f"distilled set {str(d)!r} has no {name}; expected images.pt, "
                                f"targets.pt, {META_FILE} and optionally lr.pt")
        meta = json.loads((d / META_FILE).read_text())
        lr = float(torch.load(d / "lr.pt")) if (d / "lr.pt").is_file() else None
        return cls(
            images=torch.load(d / "images.pt"),
            targets=torch.load(d / "targets.pt"),
            lr=lr,
            source=meta["source"],
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            method=meta["method"],
            config_hash=meta.get("config_hash", ""),
            extra=meta.get("extra", {}),
            ssl_recipe=meta.get("ssl_recipe"),
        )


def check_compatible(distilled: DistilledSet, channels: int, image_size: int,
                     mean: tuple[float, ...], std: tuple[float, ...], data_name: str,
                     where: str) -> None:
    """UserError unless ``distilled`` has the data's image shape and normalisation."""
    have = f"{distilled.channels}x{distilled.image_size}x{distilled.image_size}"
    want = f"{channels}x{image_size}x{image_size}"
    if have != want:
        raise UserError(f"{where} holds {have} images but {data_name!r} has {want}; distil "
                        "(or resize) at the evaluation data's size")
    same = (len(distilled.mean) == len(mean)
            and torch.allclose(torch.tensor(distilled.mean), torch.tensor(mean), atol=1e-3)
            and torch.allclose(torch.tensor(distilled.std), torch.tensor(std), atol=1e-3))
    if not same:
        def fmt(v: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"

        raise UserError(f"{where} is normalised with mean {fmt(distilled.mean)}, std "
                        f"{fmt(distilled.std)} but {data_name!r} uses mean {fmt(mean)}, std "
                        f"{fmt(std)}; convert the images to the evaluation data's "
                        "normalisation")
