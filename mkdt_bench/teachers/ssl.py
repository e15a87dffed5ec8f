"""The SSL teacher (``teacher.kind = "ssl"``, spec ``mkdt.md`` §1): trained on the unlabelled
training split with the SSL recipe ``teacher.ssl`` (:data:`mkdt_bench.ssl.SSL_RECIPES`:
lightly's loss, projection head and view transforms; Barlow Twins by default)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.ssl import display_name
from mkdt_bench.teachers.base import TeacherKind, epochs_text, trained_for
from mkdt_bench.teachers.registry import TEACHERS

if TYPE_CHECKING:
    import torch

    from mkdt_bench.data.base import ImageDataset
    from mkdt_bench.models import Encoder
    from mkdt_bench.progress import Progress


@TEACHERS.register("ssl")
class SSLTeacher(TeacherKind):
    """Trained by :func:`train_teacher` on two views of each image."""

    def make(self, dataset: ImageDataset, cfg: dict[str, Any], scratch: Path,
             device: torch.device, progress: Progress) -> Encoder:
        return train_teacher(dataset, cfg, scratch, device, progress)

    def describe(self, cfg: dict[str, Any]) -> str:
        return f"{display_name(cfg.get('ssl', '?'))} {trained_for(cfg)}"

    def passes_per_image(self, cfg: dict[str, Any]) -> int:
        return 2

    def step_label(self, cfg: dict[str, Any]) -> str:
        return f"{cfg['ssl']}, {epochs_text(cfg['epochs'])}"

    def key_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The config without ``kind``: the only kind before ``kind`` existed, so stored
        keys stay valid."""
        return {k: v for k, v in cfg.items() if k != "kind"}


def train_teacher(dataset: ImageDataset, cfg: dict[str, Any], scratch: Path,
                  device: torch.device, progress: Progress | None = None) -> Encoder:
    """Train an SSL teacher on the unlabelled training images.

    A snapshot (model, head, optimiser, scheduler, RNG states) is written to ``scratch``
    after every epoch; a rerun resumes from it and ends with identical weights on CPU.
    ``cfg["train_images"] > 0`` trains on a seeded random subset of that many images.
    """
    import torch

    from mkdt_bench.progress import Progress
    from mkdt_bench.safeload import resume
    from mkdt_bench.seeding import seed_everything
    from mkdt_bench.ssl import ssl_parts
    from mkdt_bench.ssl.views import UnlabelledViews
    from mkdt_bench.teachers.encoder import build_teacher
    from mkdt_bench.teachers.training import (
        SNAPSHOT_KEYS,
        EpochState,
        loader_options,
        training_subset,
    )
    from mkdt_bench.training import checked_step

    progress = progress or Progress(False)
    images = dataset.train_images[training_subset(len(dataset.train_images), cfg)]

    def build() -> tuple[EpochState, Any, torch.nn.Module]:
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
