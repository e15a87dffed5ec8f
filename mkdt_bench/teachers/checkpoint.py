"""A released teacher loaded from a file (``teacher.checkpoint`` / ``--teacher-checkpoint``),
e.g. KRR-ST's Barlow Twins ResNet-18."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mkdt_bench.errors import UserError
from mkdt_bench.teachers.base import TeacherKind
from mkdt_bench.teachers.registry import TEACHERS

if TYPE_CHECKING:
    import torch

    from mkdt_bench.data.base import ImageDataset
    from mkdt_bench.models import Encoder
    from mkdt_bench.progress import Progress


@TEACHERS.register("checkpoint")
class CheckpointTeacher(TeacherKind):
    """Loaded by :func:`load_teacher_checkpoint`; named by its file's checksum, not its path."""

    trains = False

    def make(self, dataset: ImageDataset, cfg: dict[str, Any], scratch: Path,
             device: torch.device, progress: Progress) -> Encoder:
        return load_teacher_checkpoint(cfg["checkpoint"], cfg["arch"], dataset)

    def describe(self, cfg: dict[str, Any]) -> str:
        name = str(cfg["checkpoint"]).rstrip("/").rsplit("/", 1)[-1]
        return f"checkpoint {name} ({cfg.get('arch', '?')})"

    def passes_per_image(self, cfg: dict[str, Any]) -> int:
        return 0

    def step_label(self, cfg: dict[str, Any]) -> str:
        return "checkpoint"

    def key_config(self, cfg: dict[str, Any]) -> dict[str, Any]:
        from mkdt_bench.cache import file_sha256

        return {"arch": cfg["arch"],
                "checkpoint_sha256": file_sha256(checkpoint_file(cfg["checkpoint"]))}


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint's path (``~`` expanded); a missing one is a UserError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"teacher checkpoint {str(path)!r} "
                        f"{'is not a file' if path.exists() else 'does not exist'}")
    return path


def load_teacher_checkpoint(path: str | Path, arch: str, dataset: ImageDataset) -> Encoder:
    """Load a teacher's backbone weights.

    Expected layout: a torchvision ResNet state dict (``conv1.weight``, ``bn1.*``,
    ``layer1.0.conv1.weight``, ...), optionally nested under ``"state_dict"`` and/or with a
    ``module.`` prefix; ``fc.*`` keys are dropped. This is the layout of KRR-ST's released
    ``barlow_twins_resnet18_*.pt`` files, which load with ``arch="resnet18-teacher"``
    (3x3 stride-1 padding-2 stem, no max-pool).
    """
    import torch

    from mkdt_bench import safeload
    from mkdt_bench.teachers.encoder import build_teacher

    p = checkpoint_file(path)
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
