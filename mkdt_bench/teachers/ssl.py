"""SSL teacher and its target representations (spec ``mkdt.md`` §1).

The teacher is trained on the unlabelled training split with lightly's Barlow Twins
(default) or SimCLR: lightly's loss, projection head and view transforms. Alternatively
a released checkpoint is loaded (:func:`load_teacher_checkpoint`).

Target representations are the teacher's pooled embedding (``features``) of every
training image: eval mode, no augmentation, no projector, no L2 normalisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightly.loss import BarlowTwinsLoss, NTXentLoss
from lightly.models.modules import BarlowTwinsProjectionHead, SimCLRProjectionHead
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    SimCLRTransform,
)
from PIL import Image
from torch import Tensor, nn

from mkdt_bench import safeload
from mkdt_bench.cache import atomic_torch_save
from mkdt_bench.data.base import ImageDataset
from mkdt_bench.device import to_host
from mkdt_bench.errors import UserError
from mkdt_bench.models import Encoder, create_model
from mkdt_bench.options import SEED_MAX, Interval
from mkdt_bench.progress import Progress
from mkdt_bench.safeload import check_like, check_optimizer, resume
from mkdt_bench.seeding import rng_state, seed_everything, set_rng_state
from mkdt_bench.training import checked_step

#: Teacher options (``[teacher]`` in presets, ``--set teacher.KEY=VALUE``).
TEACHER_DEFAULTS: dict[str, Any] = {
    "kind": "ssl",
    "arch": "resnet18",
    "ssl": "barlow_twins",
    "epochs": 200,
    "batch_size": 256,
    "lr": 0.06,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "proj_dim": 2048,
    "bt_lambda": 5e-3,
    "temperature": 0.5,
    "min_scale": 0.08,
    "cj_strength": 0.5,
    "gaussian_blur": 0.0,
    "hf_prob": 0.5,
    "train_images": 0,
    "seed": 0,
    "checkpoint": "",
}
TEACHER_CHOICES: dict[str, Any] = {"kind": ("ssl", "supervised"),
                                   "ssl": ("barlow_twins", "simclr")}
#: Ranges of the numeric teacher options (:func:`mkdt_bench.options.resolve_options`).
TEACHER_BOUNDS: dict[str, Interval] = {
    "epochs": Interval(int, 1, None),
    "batch_size": Interval(int, 2, None, note="the SSL losses compare the images of a batch"),
    "lr": Interval(float, 0, None, closed="neither"),
    "momentum": Interval(float, 0, 1, closed="left"),
    "weight_decay": Interval(float, 0, None),
    "proj_dim": Interval(int, 1, None),
    "bt_lambda": Interval(float, 0, None),
    "temperature": Interval(float, 0, None, closed="neither"),
    "min_scale": Interval(float, 0, 1, closed="right", note="the smallest crop's area share"),
    "cj_strength": Interval(float, 0, 2.5, note="lightly's hue jitter, 0.2 x cj_strength, "
                            "must stay within 0.5"),
    "gaussian_blur": Interval(float, 0, 1, note="a probability"),
    "hf_prob": Interval(float, 0, 1, note="a probability"),
    "train_images": Interval(int, 0, None, note="0 = every training image"),
    "seed": Interval(int, 0, SEED_MAX),
}


def build_teacher(arch: str, dataset: ImageDataset) -> Encoder:
    """A teacher encoder for ``dataset``; its regression head is unused and removed."""
    model = create_model(arch, in_channels=dataset.channels, image_size=dataset.image_size,
                         out_dim=1)
    model.head = nn.Identity()
    return model


class UnlabelledViews(torch.utils.data.Dataset):
    """The training images as PIL images, each returned as a pair of SSL views."""

    def __init__(self, images: Tensor, transform: Any) -> None:
        mode = "L" if images.shape[1] == 1 else "RGB"
        arrays = images.permute(0, 2, 3, 1).numpy()
        self.images = [Image.fromarray(a.squeeze(-1) if mode == "L" else a, mode) for a in arrays]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        v1, v2 = self.transform(self.images[i])
        return v1, v2


def ssl_parts(cfg: dict[str, Any], mean: tuple[float, ...], std: tuple[float, ...],
              size: int, feature_dim: int) -> tuple[Any, nn.Module, nn.Module]:
    """lightly's view transform (normalising with ``mean``/``std``), projection head and
    loss for the SSL recipe in ``cfg`` (the ``[teacher]`` keys ``ssl``, ``proj_dim``, ...)."""
    norm = {"mean": list(mean), "std": list(std)}
    common = dict(input_size=size, cj_strength=cfg["cj_strength"], min_scale=cfg["min_scale"],
                  gaussian_blur=cfg["gaussian_blur"], hf_prob=cfg["hf_prob"], normalize=norm)
    if cfg["ssl"] == "barlow_twins":
        transform = BYOLTransform(view_1_transform=BYOLView1Transform(**common),
                                  view_2_transform=BYOLView2Transform(**common))
        head = BarlowTwinsProjectionHead(feature_dim, cfg["proj_dim"], cfg["proj_dim"])
        loss = BarlowTwinsLoss(lambda_param=cfg["bt_lambda"])
    else:
        transform = SimCLRTransform(**common)
        head = SimCLRProjectionHead(feature_dim, cfg["proj_dim"], 128)
        loss = NTXentLoss(temperature=cfg["temperature"])
    return transform, head, loss


#: Most DataLoader worker processes for the teacher's views on a GPU.
MAX_LOADER_WORKERS = 16


def loader_options(device: torch.device) -> dict[str, Any]:
    """DataLoader options of the teacher's SSL views: on a GPU, worker processes (up to
    :data:`MAX_LOADER_WORKERS`, one core left to the training loop) make the augmentations
    while the GPU trains, into pinned memory; on the CPU none (the training loop has the
    cores, and the numbers stay those of the single-process loader).

    Each worker is seeded from the loader's generator at the start of every epoch, so a run
    is reproducible for a given worker count and resumes exactly (the generator is in the
    snapshot); the augmentations differ from the single-process loader's.
    """
    if device.type != "cuda":
        return {}
    workers = min(MAX_LOADER_WORKERS, max((os.cpu_count() or 1) - 1, 0))
    return {"num_workers": workers, "pin_memory": torch.cuda.is_available()}


#: The parts of a teacher's resume snapshot and their types (tensors and plain data only).
SNAPSHOT_KEYS: dict[str, type | tuple[type, ...]] = {
    "model": dict, "head": dict, "opt": dict, "sched": dict, "generator": torch.Tensor,
    "rng": dict, "epoch": int}


@dataclass
class EpochState:
    """A teacher's training state between epochs (SSL and supervised): what its resume
    snapshot holds, as tensors and plain data (issue 29 §1)."""

    model: nn.Module
    head: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    epoch: int = 0

    def save(self, path: Path) -> None:
        """The state on the host, so that it resumes on any device."""
        atomic_torch_save(to_host({
            "model": self.model.state_dict(), "head": self.head.state_dict(),
            "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
            "generator": self.generator.get_state(), "rng": rng_state(), "epoch": self.epoch,
        }), path)

    def load(self, snap: dict[str, Any], epochs: int) -> EpochState:
        """Continue from ``snap`` (keys :data:`SNAPSHOT_KEYS`) of a run of ``epochs`` epochs;
        raises (``ValueError``, ``RuntimeError``, ...) when it does not fit these parts, which
        may then be partly changed."""
        if not 0 <= snap["epoch"] <= epochs:
            raise ValueError(f"epoch {snap['epoch']} is not in 0..{epochs}")
        check_like(snap["model"], self.model.state_dict(), "model")
        check_like(snap["head"], self.head.state_dict(), "head")
        check_optimizer(snap["opt"], self.opt, "opt")
        check_like(snap["sched"], self.sched.state_dict(), "sched")
        self.model.load_state_dict(snap["model"])
        self.head.load_state_dict(snap["head"])
        self.opt.load_state_dict(snap["opt"])
        self.sched.load_state_dict(snap["sched"])
        self.generator.set_state(snap["generator"])
        set_rng_state(snap["rng"])
        self.epoch = snap["epoch"]
        return self


def train_teacher(dataset: ImageDataset, cfg: dict[str, Any], scratch: Path,
                  device: torch.device, progress: Progress | None = None) -> Encoder:
    """Train an SSL teacher on the unlabelled training images.

    A snapshot (model, head, optimiser, scheduler, RNG states) is written to ``scratch``
    after every epoch; a rerun resumes from it and ends with identical weights on CPU.
    ``cfg["train_images"] > 0`` trains on a seeded random subset of that many images.
    """
    progress = progress or Progress(False)
    images = dataset.train_images
    if 0 < cfg["train_images"] < len(images):  # a seeded random subset (folders are class-sorted)
        subset = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg["seed"]))
        images = images[subset[: cfg["train_images"]]]
    if len(images) < cfg["batch_size"]:
        raise UserError(f"teacher.batch_size={cfg['batch_size']} is larger than the "
                        f"{len(images)} training images; lower it")

    def build() -> tuple[EpochState, Any, nn.Module]:
        seed_everything(cfg["seed"])
        model = build_teacher(cfg["arch"], dataset).to(device)
        transform, head, criterion = ssl_parts(cfg, dataset.mean, dataset.std,
                                               dataset.image_size, model.feature_dim)
        head = head.to(device)
        opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=cfg["lr"],
                              momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"])
        generator = torch.Generator().manual_seed(cfg["seed"])
        return EpochState(model, head, opt, sched, generator), transform, criterion

    snap = scratch / "teacher_state.pt"
    state, transform, criterion = build()
    if snap.is_file() and resume(snap, SNAPSHOT_KEYS,
                                 lambda s: state.load(s, cfg["epochs"])) is None:
        state, transform, criterion = build()  # a discarded snapshot may have changed parts
    model, head, opt, sched, start_epoch = (state.model, state.head, state.opt, state.sched,
                                            state.epoch)
    loader = torch.utils.data.DataLoader(UnlabelledViews(images, transform),
                                         batch_size=cfg["batch_size"], shuffle=True,
                                         drop_last=True, generator=state.generator,
                                         **loader_options(device))
    bar = progress.bar(cfg["epochs"], "teacher", initial=start_epoch)
    for epoch in range(start_epoch, cfg["epochs"]):
        model.train()
        head.train()
        total = 0.0
        for v1, v2 in loader:
            z1 = head(model.features(v1.to(device, non_blocking=True)))
            z2 = head(model.features(v2.to(device, non_blocking=True)))
            total += checked_step(opt, criterion(z1, z2), f"teacher training at epoch {epoch}",
                                  f"lower teacher.lr (now {cfg['lr']:g})")
        sched.step()
        state.epoch = epoch + 1
        state.save(snap)
        bar.set_postfix(loss=f"{total / max(len(loader), 1):.3f}")
        bar.update(1)
    bar.close()
    return model.eval()


def load_teacher_checkpoint(path: str | Path, arch: str, dataset: ImageDataset) -> Encoder:
    """Load a teacher's backbone weights.

    Expected layout: a torchvision ResNet state dict (``conv1.weight``, ``bn1.*``,
    ``layer1.0.conv1.weight``, ...), optionally nested under ``"state_dict"`` and/or with a
    ``module.`` prefix; ``fc.*`` keys are dropped. This is the layout of KRR-ST's released
    ``barlow_twins_resnet18_*.pt`` files, which load with ``arch="resnet18-teacher"``
    (3x3 stride-1 padding-2 stem, no max-pool).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"teacher checkpoint {str(p)!r} "
                        f"{'is not a file' if p.exists() else 'does not exist'}")
    try:
        state = safeload.load(p, map_location="cpu")
    except safeload.UnreadableFileError as e:
        raise UserError(f"teacher checkpoint {str(p)!r} cannot be loaded: {e.reason}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"teacher checkpoint {str(p)!r} holds no state dict")
    for key, value in state.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            raise UserError(f"teacher checkpoint {str(p)!r}: its entry {str(key)[:60]!r} maps "
                            f"a {type(key).__name__} to a {type(value).__name__}; a state dict "
                            "maps names (str) to tensors")
        if value.dtype.is_floating_point and not torch.isfinite(value).all():
            raise UserError(f"teacher checkpoint {str(p)!r}: {key[:60]!r} holds NaN or "
                            "infinite values; these weights would give NaN representations")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = build_teacher(arch, dataset)
    if not hasattr(model, "load_backbone_state_dict"):
        raise UserError(f"teacher.arch={arch!r} cannot load a checkpoint; use resnet18-teacher "
                        "or resnet18")
    model.load_backbone_state_dict(state)
    return model.eval()


@torch.no_grad()
def encode(model: nn.Module, images: Tensor, device: torch.device,
           batch_size: int = 512) -> Tensor:
    """``model.features`` of every image, eval mode, no augmentation, on CPU as float32."""
    was_training = model.training
    model.eval()
    out = [model.features(images[i:i + batch_size].to(device)).float().cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty(0, getattr(model, "feature_dim", 0))
    return torch.cat(out)


__all__ = ["SNAPSHOT_KEYS", "TEACHER_BOUNDS", "TEACHER_CHOICES", "TEACHER_DEFAULTS", "EpochState",
           "UnlabelledViews", "build_teacher", "encode", "load_teacher_checkpoint", "ssl_parts",
           "train_teacher"]
