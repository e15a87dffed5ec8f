"""What a teacher kind is: how a teacher is made (trained or loaded), named in captions,
keyed in the cache and costed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from mkdt_bench.data.base import ImageDataset
    from mkdt_bench.models import Encoder
    from mkdt_bench.progress import Progress


class TeacherKind:
    """One way to make the teacher. Subclasses implement :meth:`make`, :meth:`describe` and
    :meth:`passes_per_image`; ``cfg`` is the ``[teacher]`` section (a row's
    ``teacher_config``). Kind modules import torch only inside :meth:`make`, so that naming
    and describing a teacher imports none."""

    #: The name it is registered under (set by :data:`mkdt_bench.teachers.TEACHERS`).
    name: ClassVar[str] = ""
    #: Whether ``teacher.kind`` may name it; a loaded kind is chosen by its own option
    #: (``teacher.checkpoint``).
    trains: ClassVar[bool] = True

    def make(self, dataset: ImageDataset, cfg: dict[str, Any], scratch: Path,
             device: torch.device, progress: Progress) -> Encoder:
        """The teacher for ``dataset`` (head removed, eval mode); a trained kind snapshots
        into ``scratch`` and resumes from it."""
        raise NotImplementedError

    def describe(self, cfg: dict[str, Any]) -> str:
        """The teacher in words for captions: ``SimCLR resnet10, 20 epochs on 1,437 images``."""
        raise NotImplementedError

    def passes_per_image(self, cfg: dict[str, Any]) -> int:
        """Forward and backward passes through the backbone per training image per epoch
        (2 for two SSL views, 1 with labels, 0 for a loaded teacher), for cost estimates."""
        raise NotImplementedError

    def key_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """What names this teacher in the cache key: the whole config unless a kind says less."""
        return dict(cfg)

    def step_label(self, cfg: dict[str, Any]) -> str:
        """How a plan's teacher step names it: ``supervised, 10 epochs``."""
        return f"{self.name}, {epochs_text(cfg['epochs'])}"


def epochs_text(epochs: int) -> str:
    """``1 epoch``, ``20 epochs``."""
    return f"{epochs} epoch{'' if epochs == 1 else 's'}"


def trained_for(cfg: dict[str, Any]) -> str:
    """``resnet10, 20 epochs on 1,437 images`` (no image count when all were used)."""
    images = cfg.get("train_images") or 0
    on = f" on {images:,} images" if images else ""
    return f"{cfg.get('arch', '?')}, {cfg.get('epochs', '?')} epochs{on}"
