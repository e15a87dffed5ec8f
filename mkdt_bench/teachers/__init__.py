"""The teacher: the encoder whose representations the methods distil (spec ``mkdt.md`` §1).

Teacher kinds are registered in :data:`TEACHERS`, one file each: ``ssl`` (the paper's,
:mod:`.ssl`), ``supervised`` (a labelled proxy, :mod:`.supervised`) and ``checkpoint`` (a
released file, :mod:`.checkpoint`); a new kind is one file plus its import below. Shared
parts: :mod:`.encoder` (``build_teacher``, ``encode``), :mod:`.training` (``EpochState``,
``loader_options``, ``training_subset``), :mod:`.options` (the ``[teacher]`` options).
Importing this package imports no torch.
"""

from __future__ import annotations

from typing import Any

from mkdt_bench.teachers import checkpoint, ssl, supervised  # noqa: F401 - the kinds register
from mkdt_bench.teachers.base import TeacherKind
from mkdt_bench.teachers.options import TEACHER_BOUNDS, TEACHER_CHOICES, TEACHER_DEFAULTS
from mkdt_bench.teachers.registry import TEACHERS


def kind_name(cfg: dict[str, Any]) -> str:
    """The kind of the teacher ``cfg`` makes: ``checkpoint`` when one is given, else
    ``cfg["kind"]`` (``ssl`` for rows stored before ``kind`` existed)."""
    return "checkpoint" if cfg.get("checkpoint") else cfg.get("kind", "ssl")


def teacher_kind(cfg: dict[str, Any]) -> TeacherKind:
    """The :class:`TeacherKind` that makes the teacher ``cfg`` describes."""
    return TEACHERS.get(kind_name(cfg))()


def describe_teacher(cfg: dict[str, Any]) -> str:
    """``SimCLR resnet10, 20 epochs on 1,437 images``, ``supervised (labelled proxy)
    convnet, 10 epochs`` or ``checkpoint x.pt (resnet18)``; ``no teacher`` for none."""
    return teacher_kind(cfg).describe(cfg) if cfg else "no teacher"


__all__ = ["TEACHERS", "TEACHER_BOUNDS", "TEACHER_CHOICES", "TEACHER_DEFAULTS", "TeacherKind",
           "describe_teacher", "kind_name", "teacher_kind"]
