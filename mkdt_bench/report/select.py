"""Which stored rows a ``table`` or a ``plot`` shows (their filters)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mkdt_bench.errors import UserError
from mkdt_bench.results import TEACHER_ROW


@dataclass(frozen=True)
class RowFilter:
    """What ``plot`` keeps: rows of this source ``dataset``, these ``methods`` (row labels),
    this ``budget`` (images), encoder ``arch``, ``evaluator``, ``task`` and ``teacher``
    (its cache key or the key's first characters); None keeps every value."""

    dataset: str | None = None
    methods: list[str] | None = None
    budget: int | None = None
    arch: str | None = None
    evaluator: str | None = None
    task: str | None = None
    teacher: str | None = None


def select_rows(frame: pd.DataFrame, keep: RowFilter) -> pd.DataFrame:
    """The rows ``keep`` selects; the teacher rows (the ceiling, of their own size and
    encoder) stay whatever its methods, budget and encoder say."""
    if frame.empty:
        return frame
    teacher = frame["method"] == TEACHER_ROW
    kept = teacher | True
    for column, value in (("method", keep.methods), ("budget", keep.budget),
                          ("arch", keep.arch)):
        if value is not None:
            kept &= teacher | frame[column].isin(value if isinstance(value, list) else [value])
    for column, value in (("dataset", keep.dataset), ("evaluator", keep.evaluator),
                          ("task", keep.task)):
        if value is not None:
            kept &= frame[column] == value
    if keep.teacher:
        keys = frame["provenance"].map(lambda p: p.teacher or "")
        kept &= keys.str.startswith(keep.teacher)
    return frame[kept]


def table_rows(frame: pd.DataFrame, dataset: str | None, methods: list[str] | None,
               where: str) -> pd.DataFrame:
    """The rows ``table`` shows: of the source ``dataset`` and the row labels ``methods``
    (with the teacher's rows) where given; a name with no stored rows in ``where`` (the
    database) is a UserError, not an empty table."""
    for flag, column, wanted in (("--dataset", "dataset", [dataset] if dataset else []),
                                 ("--methods", "method", methods or [])):
        stored = sorted(set(frame[column]))
        absent = [w for w in wanted if w not in stored]
        if absent:
            raise UserError(f"{flag}: no stored rows of {', '.join(map(repr, absent))} in "
                            f"{where!r}; stored: {', '.join(stored) or '(none)'}")
    if dataset:
        frame = frame[frame["dataset"] == dataset]
    if methods:
        frame = frame[frame["method"].isin([*methods, TEACHER_ROW])]
    return frame


__all__ = ["RowFilter", "select_rows", "table_rows"]
