"""A teacher trained **with labels** (``teacher.kind = "supervised"``): a proxy, not MKDT's
SSL teacher.

The paper's teacher is self-supervised (spec ``mkdt.md`` §1). On a CPU an SSL teacher trained
for an hour probes far below one trained with labels for the same time, which leaves the
CPU yardstick too little room between ``none`` and the teacher to rank methods
(``results/cifar10-cpu-v2-validation.md``). This module offers the labelled teacher as a
clearly named stand-in: cross-entropy through a linear classifier on the encoder's pooled
features, SGD with momentum and a cosine schedule, random crop (padding 4, raw-zero padding) and
horizontal flip. Its representations are the same pooled ``features`` an SSL teacher gives,
so every method and evaluator treats it alike; tables name the teacher they used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.teachers.base import TeacherKind, trained_for
from mkdt_bench.teachers.registry import TEACHERS

if TYPE_CHECKING:
    import torch

    from mkdt_bench.data.base import ImageDataset
    from mkdt_bench.models import Encoder
    from mkdt_bench.progress import Progress

#: Padding of the random crop (the usual CIFAR recipe).
CROP_PADDING = 4


@TEACHERS.register("supervised")
class SupervisedTeacher(TeacherKind):
    """Trained by :func:`train_supervised_teacher` on one crop of each labelled image."""

    def make(self, dataset: ImageDataset, cfg: dict[str, Any], scratch: Path,
             device: torch.device, progress: Progress) -> Encoder:
        from mkdt_bench.teachers.encoder import build_teacher

        return train_supervised_teacher(dataset, cfg, build_teacher(cfg["arch"], dataset),
                                        scratch, device, progress)

    def describe(self, cfg: dict[str, Any]) -> str:
        return f"{self.name} (labelled proxy) {trained_for(cfg)}"

    def passes_per_image(self, cfg: dict[str, Any]) -> int:
        return 1


def train_supervised_teacher(dataset: ImageDataset, cfg: dict[str, Any], model: Encoder,
                             scratch: Path, device: torch.device,
                             progress: Progress | None = None) -> Encoder:
    """Train ``model`` (a teacher encoder, head removed) by cross-entropy on the labelled
    training images (``cfg["train_images"] > 0``: a seeded subset, as the SSL teacher).

    Uses ``epochs``, ``batch_size``, ``lr``, ``momentum``, ``weight_decay`` and ``seed`` of
    the teacher config. A snapshot after every epoch makes a rerun resume to the same weights
    on CPU; the classifier is dropped at the end.
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    from mkdt_bench.augment import crop_flip
    from mkdt_bench.progress import Progress
    from mkdt_bench.safeload import resume
    from mkdt_bench.seeding import seed_everything
    from mkdt_bench.teachers.training import SNAPSHOT_KEYS, EpochState, training_subset
    from mkdt_bench.training import checked_step

    progress = progress or Progress(False)
    keep = training_subset(len(dataset.train_images), cfg)
    images, labels = dataset.train_images[keep], dataset.train_labels[keep]
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def build() -> EpochState:
        seed_everything(cfg["seed"])
        model.load_state_dict(initial)
        classifier = nn.Linear(model.feature_dim, dataset.num_classes).to(device)
        opt = torch.optim.SGD(list(model.parameters()) + list(classifier.parameters()),
                              lr=cfg["lr"], momentum=cfg["momentum"],
                              weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"])
        return EpochState(model, classifier, opt, sched,
                          torch.Generator().manual_seed(cfg["seed"]))

    model = model.to(device)
    snap = scratch / "teacher_state.pt"
    state = build()
    if snap.is_file() and resume(snap, SNAPSHOT_KEYS,
                                 lambda s: state.load(s, cfg["epochs"])) is None:
        state = build()  # a discarded snapshot may have changed the parts
    classifier, opt, sched, generator = state.head, state.opt, state.sched, state.generator
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    batches = len(images) // cfg["batch_size"]  # drop_last, as the SSL teacher
    bar = progress.bar(cfg["epochs"], "teacher (supervised)", initial=state.epoch)
    for epoch in range(state.epoch, cfg["epochs"]):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for b in range(batches):
            idx = order[b * cfg["batch_size"]:(b + 1) * cfg["batch_size"]]
            x = crop_flip(dataset.normalize(images[idx]), mean, std, CROP_PADDING, generator)
            logits = classifier(model.features(x.to(device)))
            loss = F.cross_entropy(logits, labels[idx].to(device))
            total += checked_step(opt, loss, f"supervised teacher training at epoch {epoch}",
                                  f"lower teacher.lr (now {cfg['lr']:g})")
        sched.step()
        state.epoch = epoch + 1
        state.save(snap)
        bar.set_postfix(loss=f"{total / max(batches, 1):.3f}")
        bar.update(1)
    bar.close()
    return model.eval()
