"""The teacher kind registry, below the kind files (timm's ``_registry``)."""

from __future__ import annotations

from mkdt_bench.registry import Registry, named_class
from mkdt_bench.teachers.base import TeacherKind

#: Teacher kinds by name (``teacher.kind``; ``checkpoint`` when ``teacher.checkpoint`` is
#: set); plug-ins register in the entry-point group ``mkdt_bench.teachers``.
TEACHERS: Registry[type[TeacherKind]] = Registry(
    "teacher kind", entry_point_group="mkdt_bench.teachers", on_add=named_class,
    base=TeacherKind)
