"""Precomputed teacher views for KRR-ST's opt-in ``teacher_views`` mode.

A deviation from ``krrst.md`` §2.4 / §2.9, where every outer step augments its real batch
afresh and runs the teacher on it: here each pool image i gets V fixed augmentations
(crop offsets and flip bit, drawn once from the same distribution as
:func:`mkdt_bench.augment.crop_flip`) and the teacher's representation of each view is
computed once and cached (stage ``krrst-views``). An outer step then picks one of its
images' V views, rebuilds the augmented images from the stored parameters and reads the
stored targets: no teacher forward inside the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mkdt_bench.augment import apply_crop_flip, draw_crop_flip
from mkdt_bench.cache import ArtifactCache, config_hash
from mkdt_bench.methods.base import MethodContext
from mkdt_bench.safeload import corrupt_artifact, load_artifact
from mkdt_bench.seeding import derive_seed

STAGE = "krrst-views"
VIEWS_FILE = "views.pt"
#: Images per teacher forward while precomputing.
CHUNK = 1024


@dataclass
class TeacherViews:
    """V views of each of N images: ``offsets`` V x N x 2 (uint8), ``flips`` V x N (bool),
    ``targets`` V x N x D (the teacher's representation of each view, float32)."""

    offsets: Tensor
    flips: Tensor
    targets: Tensor
    padding: int

    def batch(self, images: Tensor, idx: Tensor, mean: Tensor, std: Tensor,
              generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The augmented real batch ``idx`` and its teacher targets: one of the V views per
        image, uniformly from ``generator``; ``images`` are all N normalised images."""
        view = torch.randint(len(self.offsets), (len(idx),), generator=generator)
        real = apply_crop_flip(images[idx].to(mean.device), mean, std, self.padding,
                               self.offsets[view, idx], self.flips[view, idx])
        return real, self.targets[view, idx].to(mean.device)


def compute_views(images: Tensor, mean: Tensor, std: Tensor, teacher: nn.Module, views: int,
                  padding: int, generator: torch.Generator,
                  progress: Callable[[], None] = lambda: None) -> TeacherViews:
    """Draw ``views`` augmentations per image (view by view) and the teacher's targets of
    each (no grad, in chunks of :data:`CHUNK`); ``progress`` is called after every view."""
    n = len(images)
    offsets = torch.empty(views, n, 2, dtype=torch.uint8)
    flips = torch.empty(views, n, dtype=torch.bool)
    targets: Tensor | None = None
    for v in range(views):
        offsets[v], flips[v] = draw_crop_flip(n, padding, generator)
        for start in range(0, n, CHUNK):
            sl = slice(start, start + CHUNK)
            real = apply_crop_flip(images[sl].to(mean.device), mean, std, padding,
                                   offsets[v, sl], flips[v, sl])
            with torch.no_grad():
                out = teacher.features(real).cpu()
            if targets is None:
                targets = torch.empty(views, n, out.shape[1], dtype=out.dtype)
            targets[v, sl] = out
        progress()
    assert targets is not None
    return TeacherViews(offsets, flips, targets, padding)


def _fits(stored: Any, views: int, n: int, padding: int) -> bool:
    """Whether a loaded views file holds what :func:`ensure_views` writes for ``views`` views
    of ``n`` images with crop ``padding``."""
    if not isinstance(stored, dict):
        return False
    parts = [stored.get(k) for k in ("offsets", "flips", "targets")]
    if not all(isinstance(t, Tensor) and t.ndim >= 2 and t.shape[:2] == (views, n)
               for t in parts):
        return False
    offsets, flips, targets = parts
    if not (offsets.dtype == torch.uint8 and offsets.shape[2:] == (2,)
            and flips.dtype == torch.bool and flips.ndim == 2
            and targets.ndim == 3 and targets.is_floating_point()):
        return False
    return offsets.numel() == 0 or int(offsets.max()) <= 2 * padding


def views_config(views: int, padding: int, channels_last: bool) -> dict[str, Any]:
    """What names a views artifact besides the inputs: V, the crop padding and the teacher's
    memory layout (its targets differ by float rounding between layouts)."""
    return {"views": views, "padding": padding, "teacher_channels_last": channels_last}


def ensure_views(ctx: MethodContext, views: int, padding: int, channels_last: bool,
                 load_teacher: Callable[[], nn.Module]) -> TeacherViews:
    """The views of ``ctx.images`` from the cache, computed first if missing.

    The draws come from a generator seeded by the views config, not the run seed, so every
    seed (and method run) on the same inputs shares the artifact; ``ctx.inputs_key`` names
    the images and, through the representations, the teacher. ``load_teacher`` is called
    only on a cache miss.
    """
    config = views_config(views, padding, channels_last)
    inputs = {"representations": ctx.inputs_key}
    key = ArtifactCache.key(STAGE, config, inputs)

    def produce(tmp: Path) -> dict[str, Any]:
        mean, std = (torch.tensor(v, device=ctx.device).view(1, -1, 1, 1)
                     for v in (ctx.mean, ctx.std))
        generator = torch.Generator().manual_seed(derive_seed(STAGE, config_hash(config)))
        bar = ctx.progress.bar(views, "krrst views")
        out = compute_views(ctx.images, mean, std, load_teacher(), views, padding, generator,
                            lambda: bar.update(1))
        bar.close()
        torch.save({"offsets": out.offsets, "flips": out.flips, "targets": out.targets},
                   tmp / VIEWS_FILE)
        return {"images": len(ctx.images), "dim": int(out.targets.shape[2]),
                "target_bytes": out.targets.nbytes}

    path = ctx.cache.get_or_create(STAGE, key, produce, config=config, inputs=inputs)
    stored = load_artifact(path / VIEWS_FILE, mmap=True)
    if not _fits(stored, views, len(ctx.images), padding):
        raise corrupt_artifact(path / VIEWS_FILE,
                               f"not {views} views of each of the {len(ctx.images)} images")
    return TeacherViews(stored["offsets"], stored["flips"], stored["targets"], padding)
